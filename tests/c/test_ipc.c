/* Tensors across processes in C, as docs/c-api.md describes them: a shared tensor's handle and
 * descriptor sent to a forked child over a Unix socket pair with SCM_RIGHTS; the child rebuilds
 * the tensor on the same memory, reads the parent's write and writes back; forged, truncated
 * and mismatched handles are refused; nothing leaks in either process. */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "dlbridge.h"

static const DLDataType F64 = {kDLFloat, 64, 1};

/* Sends the handle bytes with the descriptor as SCM_RIGHTS ancillary data. */
static int send_handle(int sock, const uint8_t *h, int fd) {
    struct iovec iov = {(void *)h, DLB_IPC_HANDLE_SIZE};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } c;
    memset(&c, 0, sizeof c);
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = c.buf;
    m.msg_controllen = sizeof c.buf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    return sendmsg(sock, &m, 0) == DLB_IPC_HANDLE_SIZE ? 0 : -1;
}

/* Receives what send_handle sent: the handle's length, and the new descriptor in *fd. */
static ssize_t recv_handle(int sock, uint8_t *h, int *fd) {
    struct iovec iov = {h, DLB_IPC_HANDLE_SIZE};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } c;
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = c.buf;
    m.msg_controllen = sizeof c.buf;
    ssize_t n = recvmsg(sock, &m, 0);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    *fd = -1;
    if (n > 0 && cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
        memcpy(fd, CMSG_DATA(cm), sizeof(int));
    return n;
}

static double *data(dlb_tensor *t) {
    void *p = NULL;
    CHECK_EQ(dlb_tensor_data_mut(t, &p), DLB_OK);
    return (double *)p;
}

/* The child: receive, rebuild, check, write, release. Its exit status is its verdict. */
static int child(int sock) {
    uint8_t h[DLB_IPC_HANDLE_SIZE];
    int fd = -1;
    ssize_t n = recv_handle(sock, h, &fd);
    CHECK_EQ(n, DLB_IPC_HANDLE_SIZE);
    CHECK(fd >= 0);
    dlb_tensor *t = NULL;
    CHECK_EQ(dlb_tensor_from_ipc(h, (size_t)n, fd, &t), DLB_OK);
    close(fd); /* dlbridge keeps its own duplicate */
    if (t) {
        CHECK(dlb_tensor_is_shared(t));
        CHECK_EQ(dlb_tensor_dltensor(t)->ndim, 2);
        double *p = data(t);
        CHECK(p && p[5] == 2.5); /* the parent's write */
        if (p)
            p[11] = -7.0;
    }
    dlb_tensor_free(t);
    CHECK_EQ(dlb_live_allocations(), 0);
    char ack = 1;
    CHECK(write(sock, &ack, 1) == 1);
    close(sock);
    return check_report();
}

int main(void) {
    const int64_t shape[2] = {3, 4};
    dlb_tensor *t = NULL;
    CHECK_EQ(dlb_tensor_zeros_shared(shape, 2, F64, &t), DLB_OK);
    if (!t)
        return check_report();
    double *p = data(t);
    p[5] = 2.5;

    uint8_t h[DLB_IPC_HANDLE_SIZE];
    int32_t fd = -2;
    CHECK_EQ(dlb_tensor_to_ipc(t, h, &fd), DLB_OK);
    CHECK(fd >= 0);

    /* Refusals, each with a message and no tensor. */
    dlb_tensor *bad = NULL;
    CHECK_EQ(dlb_tensor_from_ipc(h, DLB_IPC_HANDLE_SIZE - 1, fd, &bad), DLB_ERR_INVALID_ARGUMENT);
    CHECK(bad == NULL && strstr(dlb_last_error(), "truncated") != NULL);
    uint8_t forged[DLB_IPC_HANDLE_SIZE];
    memcpy(forged, h, sizeof forged);
    forged[40] ^= 0x10; /* the byte offset, check sum not updated */
    CHECK_EQ(dlb_tensor_from_ipc(forged, sizeof forged, fd, &bad), DLB_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dlb_last_error(), "check sum") != NULL);
    CHECK_EQ(dlb_tensor_from_ipc(h, sizeof h, -1, &bad), DLB_ERR_INVALID_ARGUMENT);
    CHECK_EQ(dlb_tensor_from_ipc(h, sizeof h, 0, &bad), DLB_ERR_INVALID_ARGUMENT); /* stdin */
    dlb_tensor *priv = NULL, *copy = NULL;
    CHECK_EQ(dlb_tensor_zeros(shape, 2, F64, (DLDevice){kDLCPU, 0}, &priv), DLB_OK);
    int32_t no_fd = 5;
    CHECK_EQ(dlb_tensor_to_ipc(priv, forged, &no_fd), DLB_ERR_UNSUPPORTED);
    CHECK_EQ(no_fd, -1);
    CHECK_EQ(dlb_tensor_share(priv, &copy), DLB_OK);
    CHECK(dlb_tensor_is_shared(copy) && !dlb_tensor_is_shared(priv));
    dlb_tensor_free(priv);
    dlb_tensor_free(copy);

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        dlb_tensor_free(t); /* the parent's handle, inherited: not the child's to keep */
        close(fd);
        exit(child(sv[1]));
    }
    close(sv[1]);
    CHECK(send_handle(sv[0], h, fd) == 0);
    close(fd); /* sent: the child has its own */
    char ack = 0;
    CHECK(read(sv[0], &ack, 1) == 1 && ack == 1);
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(p[11] == -7.0); /* the child's write */
    close(sv[0]);
    dlb_tensor_free(t);
    CHECK_EQ(dlb_live_allocations(), 0);
    return check_report();
}
