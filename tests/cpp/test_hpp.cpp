// Tests of include/dlbridge.hpp, the header-only C++17 wrapper: every member of every class,
// RAII (dlb_live_allocations() returns to its start value), errors, moved-from objects,
// dtype-checked element access, from_data's release callbacks (called once, never on failure),
// DLPack round trips, and handing tensors to another process (IpcHandle). Built and run by
// tests/cpp/run.sh (plain, valgrind, ASan+UBSan).
#include "dlbridge.hpp"

#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

using dlbridge::Error;
using dlbridge::IpcHandle;
using dlbridge::ManagedTensor;
using dlbridge::ManagedTensorVersioned;
using dlbridge::Span;
using dlbridge::Tensor;

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        ++checks;                                                                                 \
        if (!(cond)) {                                                                            \
            ++failures;                                                                           \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                           \
        }                                                                                         \
    } while (0)

// Runs `expr`, expects an Error with `want` and a non-empty message.
#define CHECK_THROWS(expr, want)                                                                  \
    do {                                                                                          \
        ++checks;                                                                                 \
        bool thrown_ = false;                                                                     \
        try {                                                                                     \
            (void)(expr);                                                                         \
        } catch (const Error &e_) {                                                               \
            thrown_ = true;                                                                       \
            if (e_.status() != (want) || e_.message().empty()) {                                  \
                ++failures;                                                                       \
                std::printf("FAIL %s:%d: %s threw %s (%s), wanted %s\n", __FILE__, __LINE__,     \
                            #expr, dlbridge::status_name(e_.status()), e_.what(),                 \
                            dlbridge::status_name(want));                                         \
            }                                                                                     \
        }                                                                                         \
        if (!thrown_) {                                                                           \
            ++failures;                                                                           \
            std::printf("FAIL %s:%d: %s did not throw\n", __FILE__, __LINE__, #expr);             \
        }                                                                                         \
    } while (0)

// --- compile-time properties --------------------------------------------------------------------
static_assert(!std::is_copy_constructible<Tensor>::value, "Tensor is move-only");
static_assert(!std::is_copy_assignable<Tensor>::value, "Tensor is move-only");
static_assert(std::is_nothrow_move_constructible<Tensor>::value, "");
static_assert(std::is_nothrow_move_assignable<Tensor>::value, "");
static_assert(std::is_nothrow_destructible<Tensor>::value, "");
static_assert(!std::is_convertible<Tensor, bool>::value, "operator bool is explicit");
static_assert(!std::is_copy_constructible<ManagedTensorVersioned>::value, "");
static_assert(std::is_nothrow_move_constructible<ManagedTensorVersioned>::value, "");
static_assert(std::is_nothrow_move_assignable<ManagedTensorVersioned>::value, "");
static_assert(!std::is_copy_constructible<ManagedTensor>::value, "");
static_assert(std::is_nothrow_move_constructible<ManagedTensor>::value, "");
static_assert(std::is_nothrow_move_assignable<ManagedTensor>::value, "");
static_assert(!std::is_convertible<DLManagedTensorVersioned *, ManagedTensorVersioned>::value,
              "adopting a raw pointer is explicit");
static_assert(std::is_base_of<std::runtime_error, Error>::value, "");
static_assert(dlbridge::has_dtype<int8_t> && dlbridge::has_dtype<uint64_t> &&
                  dlbridge::has_dtype<const float> && !dlbridge::has_dtype<char> &&
                  !dlbridge::has_dtype<long double> && !dlbridge::has_dtype<void *>,
              "");
static_assert(dlbridge::dtype_of<float>().code == kDLFloat && dlbridge::dtype_of<float>().bits == 32,
              "");
static_assert(dlbridge::same_dtype(dlbridge::dtype_of<bool>(), DLDataType{kDLBool, 8, 1}), "");

template <class T> static void check_dtype(uint8_t code, uint8_t bits) {
    constexpr DLDataType d = dlbridge::dtype_of<T>();
    CHECK(d.code == code && d.bits == bits && d.lanes == 1);
}

static void test_dtypes_and_helpers() {
    check_dtype<int8_t>(kDLInt, 8);
    check_dtype<int16_t>(kDLInt, 16);
    check_dtype<int32_t>(kDLInt, 32);
    check_dtype<int64_t>(kDLInt, 64);
    check_dtype<uint8_t>(kDLUInt, 8);
    check_dtype<uint16_t>(kDLUInt, 16);
    check_dtype<uint32_t>(kDLUInt, 32);
    check_dtype<uint64_t>(kDLUInt, 64);
    check_dtype<float>(kDLFloat, 32);
    check_dtype<double>(kDLFloat, 64);
    check_dtype<bool>(kDLBool, 8);
    check_dtype<long long>(kDLInt, 64);

    CHECK(dlbridge::dtype_name(dlbridge::dtype_of<float>()) == "float32");
    CHECK(dlbridge::dtype_name(dlbridge::dtype_of<uint16_t>()) == "uint16");
    CHECK(dlbridge::dtype_name(dlbridge::dtype_of<bool>()) == "bool");
    CHECK(dlbridge::dtype_name(DLDataType{kDLBfloat, 16, 1}) == "bfloat16");
    CHECK(dlbridge::dtype_name(DLDataType{kDLComplex, 64, 1}) == "complex64");
    CHECK(dlbridge::dtype_name(DLDataType{kDLFloat, 32, 4}) == "float32x4");
    CHECK(dlbridge::dtype_name(DLDataType{200, 8, 1}) == "dtype(code=200, bits=8, lanes=1)");

    CHECK(std::strcmp(dlbridge::status_name(DLB_OK), "DLB_OK") == 0);
    CHECK(std::strcmp(dlbridge::status_name(DLB_ERR_READ_ONLY), "DLB_ERR_READ_ONLY") == 0);
    CHECK(std::strcmp(dlbridge::status_name(DLB_ERR_PANIC), "DLB_ERR_PANIC") == 0);
    CHECK(std::strcmp(dlbridge::status_name(DLB_ERR_INVALID_ARGUMENT), "DLB_ERR_INVALID_ARGUMENT") == 0);

    CHECK(std::strcmp(dlbridge::version(), dlb_version()) == 0);
    CHECK(dlbridge::cuda_device_count() == dlb_cuda_device_count());
    CHECK(dlbridge::live_allocations() == dlb_live_allocations());
    CHECK(dlbridge::same_device(dlbridge::cpu(), DLDevice{kDLCPU, 0}));
    CHECK(dlbridge::same_device(dlbridge::cuda(1), DLDevice{kDLCUDA, 1}));
    CHECK(dlbridge::same_device(dlbridge::cuda_host(), DLDevice{kDLCUDAHost, 0}));
    CHECK(!dlbridge::same_device(dlbridge::cpu(), dlbridge::cuda(0)));
}

static void test_span() {
    Span<const int64_t> empty;
    CHECK(empty.data() == nullptr && empty.size() == 0 && empty.empty());
    CHECK(empty.begin() == empty.end());

    std::vector<int64_t> v{1, 2, 3};
    Span<const int64_t> sv = v;
    CHECK(sv.data() == v.data() && sv.size() == 3 && sv[2] == 3);
    Span<int64_t> mv = v;
    mv[0] = 10;
    CHECK(v[0] == 10);
    Span<const int64_t> from_mutable = mv;
    CHECK(from_mutable.data() == v.data());

    const std::array<int64_t, 2> a{{4, 5}};
    Span<const int64_t> sa = a;
    CHECK(sa.size() == 2 && sa[1] == 5);

    int64_t c[4] = {1, 2, 3, 4};
    Span<int64_t> sc = c;
    int64_t sum = 0;
    for (int64_t x : sc) {
        sum += x;
    }
    CHECK(sc.size() == 4 && sum == 10);

    auto len = [](Span<const int64_t> s) { return s.size(); };
    CHECK(len({7, 8, 9}) == 3);
    CHECK(len({}) == 0);
    CHECK(len(Span<const int64_t>(c, 2)) == 2);
}

static void test_errors() {
    CHECK_THROWS(Tensor::empty({-1}, dlbridge::dtype_of<float>()), DLB_ERR_INVALID_ARGUMENT);
    try {
        (void)Tensor::zeros({2, -3}, dlbridge::dtype_of<float>());
        CHECK(false);
    } catch (const Error &e) {
        // The message is the library's, copied at once: later calls do not change it.
        const std::string msg = e.message();
        CHECK(!msg.empty());
        CHECK(msg == dlbridge::last_error());
        CHECK(std::string(e.what()) == "DLB_ERR_INVALID_ARGUMENT: " + msg);
        CHECK_THROWS(Tensor::empty({1}, DLDataType{kDLFloat, 0, 1}), DLB_ERR_INVALID_ARGUMENT);
        CHECK(e.message() == msg);
        CHECK(e.status() == DLB_ERR_INVALID_ARGUMENT);
    }

    // check() throws on failure only, with the library's message.
    dlbridge::check(DLB_OK);
    dlb_tensor *raw = nullptr;
    const int64_t bad = -5;
    try {
        dlbridge::check(dlb_tensor_empty(&bad, 1, dlbridge::dtype_of<int32_t>(), dlbridge::cpu(), &raw));
        CHECK(false);
    } catch (const Error &e) {
        CHECK(e.status() == DLB_ERR_INVALID_ARGUMENT);
        CHECK(!e.message().empty());
    }
    CHECK(raw == nullptr);

    // An Error of the caller's own making.
    Error mine(DLB_ERR_DEVICE, "no device");
    CHECK(mine.status() == DLB_ERR_DEVICE && mine.message() == "no device");
    CHECK(std::string(mine.what()) == "DLB_ERR_DEVICE: no device");

    Tensor c = Tensor::zeros({2}, DLDataType{kDLComplex, 64, 1});
    CHECK_THROWS(c.cast(dlbridge::dtype_of<float>()), DLB_ERR_UNSUPPORTED);
    CHECK_THROWS(c.to_device(DLDevice{kDLVulkan, 0}), DLB_ERR_UNSUPPORTED);
    if (dlbridge::cuda_device_count() == 0) {
        CHECK_THROWS(Tensor::empty({2}, dlbridge::dtype_of<float>(), dlbridge::cuda(0)),
                     DLB_ERR_DEVICE);
        CHECK_THROWS(c.to_device(dlbridge::cuda(0)), DLB_ERR_DEVICE);
    }
}

static void test_lifecycle() {
    const int64_t start = dlbridge::live_allocations();
    {
        Tensor t = Tensor::empty({2, 3}, dlbridge::dtype_of<float>());
        CHECK(static_cast<bool>(t));
        CHECK(t.get() != nullptr);
        CHECK(dlbridge::live_allocations() == start + 1);

        // Move construction: the source is empty, the handle moved.
        dlb_tensor *h = t.get();
        Tensor u(std::move(t));
        CHECK(!t && t.get() == nullptr && u.get() == h);
        CHECK(dlbridge::live_allocations() == start + 1);

        // Moved-from: queries throw or answer false, nothing crashes.
        CHECK_THROWS(t.dltensor(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.shape(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.ndim(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.numel(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.dtype(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.device(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.strides(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.data<float>(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.cdata<float>(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.alias(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.copy(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.view({1}), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.cast(dlbridge::dtype_of<double>()), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.to_device(dlbridge::cpu()), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.to_dlpack_versioned(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(t.to_dlpack(), DLB_ERR_INVALID_ARGUMENT);
        CHECK(!t.is_read_only() && !t.is_contiguous() && !t.shares_memory(u) && !u.shares_memory(t));

        // Move assignment frees the target's old handle.
        Tensor w = Tensor::zeros({4}, dlbridge::dtype_of<int8_t>());
        CHECK(dlbridge::live_allocations() == start + 2);
        w = std::move(u);
        CHECK(!u && w.get() == h);
        CHECK(dlbridge::live_allocations() == start + 1);
        Tensor &self = w;
        w = std::move(self); // self-move keeps the handle
        CHECK(w.get() == h);

        // release() / adopt() hand the raw handle out and back.
        dlb_tensor *raw = w.release();
        CHECK(!w && raw == h);
        CHECK(w.release() == nullptr);
        Tensor back = Tensor::adopt(raw);
        CHECK(back.get() == raw);
        CHECK(!Tensor::adopt(nullptr));

        // reset() frees at once; reset(p) adopts p.
        back.reset();
        CHECK(!back);
        CHECK(dlbridge::live_allocations() == start);
        dlb_tensor *other = nullptr;
        dlbridge::check(
            dlb_tensor_zeros(nullptr, 0, dlbridge::dtype_of<double>(), dlbridge::cpu(), &other));
        back.reset(other);
        CHECK(back.get() == other && back.ndim() == 0);

        Tensor def;
        CHECK(!def);
    }
    CHECK(dlbridge::live_allocations() == start);
}

static void test_inspection() {
    Tensor t = Tensor::zeros({2, 3, 4}, dlbridge::dtype_of<int16_t>());
    const DLTensor &d = t.dltensor();
    CHECK(d.ndim == 3 && d.byte_offset == 0 && d.data != nullptr);
    CHECK(t.ndim() == 3);
    CHECK(t.numel() == 24);
    CHECK(dlbridge::same_dtype(t.dtype(), dlbridge::dtype_of<int16_t>()));
    CHECK(dlbridge::same_device(t.device(), dlbridge::cpu()));
    Span<const int64_t> s = t.shape();
    CHECK(s.size() == 3 && s[0] == 2 && s[1] == 3 && s[2] == 4 && s.data() == d.shape);
    Span<const int64_t> st = t.strides();
    CHECK(st.size() == 3 && st[0] == 12 && st[1] == 4 && st[2] == 1);
    CHECK(t.is_contiguous() && !t.is_read_only());
    CHECK(t.shares_memory(t));
    // 256-byte alignment, every byte zero.
    CHECK(reinterpret_cast<uintptr_t>(d.data) % 256 == 0);
    const int16_t *p = t.cdata<int16_t>();
    bool all_zero = true;
    for (int64_t i = 0; i < t.numel(); ++i) {
        all_zero = all_zero && p[i] == 0;
    }
    CHECK(all_zero);

    Tensor scalar = Tensor::zeros({}, dlbridge::dtype_of<double>());
    CHECK(scalar.ndim() == 0 && scalar.numel() == 1 && scalar.shape().empty());
    Tensor none = Tensor::empty({3, 0}, dlbridge::dtype_of<float>());
    CHECK(none.numel() == 0);
    CHECK(!none.shares_memory(none)); // no elements
    std::vector<int64_t> shape{5};
    Tensor from_vec = Tensor::empty(shape, dlbridge::dtype_of<uint8_t>());
    CHECK(from_vec.numel() == 5);
}

static void test_data_access() {
    Tensor t = Tensor::zeros({2, 3}, dlbridge::dtype_of<int32_t>());
    int32_t *w = t.data<int32_t>();
    for (int i = 0; i < 6; ++i) {
        w[i] = i * 10;
    }
    const Tensor &ct = t;
    const int32_t *r = ct.data<int32_t>();
    CHECK(r == w && r[5] == 50);
    CHECK(t.cdata<int32_t>() == w);

    // The wrong element type: INVALID_ARGUMENT, naming both types.
    CHECK_THROWS(t.data<float>(), DLB_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(ct.data<uint32_t>(), DLB_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(t.cdata<int64_t>(), DLB_ERR_INVALID_ARGUMENT);
    try {
        (void)t.data<double>();
    } catch (const Error &e) {
        CHECK(e.message().find("float64") != std::string::npos);
        CHECK(e.message().find("int32") != std::string::npos);
    }

    Tensor b = Tensor::zeros({3}, dlbridge::dtype_of<bool>());
    b.data<bool>()[1] = true;
    CHECK(!b.cdata<bool>()[0] && b.cdata<bool>()[1]);
    CHECK_THROWS(b.data<uint8_t>(), DLB_ERR_INVALID_ARGUMENT);

    Tensor each[] = {
        Tensor::zeros({1}, dlbridge::dtype_of<int8_t>()),  Tensor::zeros({1}, dlbridge::dtype_of<uint8_t>()),
        Tensor::zeros({1}, dlbridge::dtype_of<int64_t>()), Tensor::zeros({1}, dlbridge::dtype_of<uint64_t>()),
        Tensor::zeros({1}, dlbridge::dtype_of<double>()),  Tensor::zeros({1}, dlbridge::dtype_of<uint16_t>()),
    };
    CHECK(each[0].data<int8_t>() != nullptr && each[1].data<uint8_t>() != nullptr &&
          each[2].data<int64_t>() != nullptr && each[3].data<uint64_t>() != nullptr &&
          each[4].data<double>() != nullptr && each[5].data<uint16_t>() != nullptr);
}

static void test_new_handles() {
    const int64_t start = dlbridge::live_allocations();
    {
        Tensor t = Tensor::empty({2, 3}, dlbridge::dtype_of<float>());
        float *p = t.data<float>();
        for (int i = 0; i < 6; ++i) {
            p[i] = static_cast<float>(i);
        }

        // alias: same memory, a handle of its own, no new allocation.
        Tensor a = t.alias();
        CHECK(a.get() != t.get() && a.shares_memory(t));
        CHECK(a.cdata<float>() == p);
        CHECK(dlbridge::live_allocations() == start + 1);

        // view: the transpose, sharing memory.
        Tensor tr = t.view({3, 2}, {1, 3});
        CHECK(tr.shares_memory(t) && !tr.is_contiguous());
        CHECK(tr.shape()[0] == 3 && tr.strides()[0] == 1 && tr.strides()[1] == 3);
        // Row 1 reversed: offset 5, stride -1.
        Tensor rev = t.view({3}, {-1}, 5);
        CHECK(rev.cdata<float>()[0] == 5.0f && rev.strides()[0] == -1);
        // Row-major view (strides omitted) with an offset.
        Tensor row = t.view({3}, {}, 3);
        CHECK(row.cdata<float>()[0] == 3.0f && row.is_contiguous());
        CHECK_THROWS(t.view({7}), DLB_ERR_INVALID_ARGUMENT);         // out of bounds
        CHECK_THROWS(t.view({2, 3}, {1}), DLB_ERR_INVALID_ARGUMENT); // strides length
        CHECK(dlbridge::live_allocations() == start + 1);

        // copy: new memory, independent.
        Tensor c = tr.copy();
        CHECK(!c.shares_memory(t) && c.is_contiguous());
        CHECK(dlbridge::live_allocations() == start + 2);
        CHECK(c.cdata<float>()[1] == 3.0f); // tr[0][1] == t[1][0]
        p[3] = 99.0f;
        CHECK(c.cdata<float>()[1] == 3.0f);
        CHECK(a.cdata<float>()[3] == 99.0f);

        // cast: a converting copy.
        Tensor i = t.cast(dlbridge::dtype_of<int64_t>());
        CHECK(dlbridge::same_dtype(i.dtype(), dlbridge::dtype_of<int64_t>()));
        CHECK(i.cdata<int64_t>()[3] == 99 && i.cdata<int64_t>()[5] == 5);
        CHECK(!i.shares_memory(t));

        // to_device: a copy on the host.
        Tensor h = rev.to_device(dlbridge::cpu());
        CHECK(!h.shares_memory(t) && h.is_contiguous() && h.cdata<float>()[2] == 99.0f);
        CHECK(dlbridge::live_allocations() == start + 4);

        // The memory outlives the original handle while an alias or view lives.
        t.reset();
        CHECK(dlbridge::live_allocations() == start + 4);
        CHECK(a.cdata<float>()[5] == 5.0f);
        a.reset();
        tr.reset();
        rev.reset();
        CHECK(dlbridge::live_allocations() == start + 4);
        row.reset();
        CHECK(dlbridge::live_allocations() == start + 3);
    }
    CHECK(dlbridge::live_allocations() == start);
}

// --- from_data ----------------------------------------------------------------------------------
static int c_release_calls = 0;
static void *c_release_ctx = nullptr;
static void c_release(void *ctx) {
    ++c_release_calls;
    c_release_ctx = ctx;
}

// Counts its own destructions (copies and moves included) to prove the box is freed.
struct Tracker {
    int *destroyed;
    bool armed = true;
    explicit Tracker(int *d) : destroyed(d) {}
    Tracker(const Tracker &o) : destroyed(o.destroyed), armed(o.armed) {}
    Tracker(Tracker &&o) noexcept : destroyed(o.destroyed), armed(o.armed) { o.armed = false; }
    Tracker &operator=(const Tracker &) = delete;
    ~Tracker() {
        if (armed) {
            ++*destroyed;
        }
    }
};

static void test_from_data() {
    const int64_t start = dlbridge::live_allocations();
    float buf[6] = {0, 1, 2, 3, 4, 5};
    int marker = 0;

    // The function-pointer form: release(ctx) once, when the last user is gone.
    {
        Tensor t = Tensor::from_data(buf, {2, 3}, {}, dlbridge::dtype_of<float>(), dlbridge::cpu(),
                                     false, &c_release, &marker);
        CHECK(dlbridge::live_allocations() == start + 1);
        CHECK(t.cdata<float>() == buf && !t.is_read_only() && t.is_contiguous());
        Tensor a = t.alias();
        t.reset();
        CHECK(c_release_calls == 0);
        a.data<float>()[0] = 42.0f;
        CHECK(buf[0] == 42.0f);
    }
    CHECK(c_release_calls == 1 && c_release_ctx == &marker);
    CHECK(dlbridge::live_allocations() == start);

    // Explicit strides (column-major) and release = nullptr.
    {
        Tensor t = Tensor::from_data(buf, {2, 3}, {1, 2}, dlbridge::dtype_of<float>(),
                                     dlbridge::cpu(), false, nullptr, nullptr);
        CHECK(!t.is_contiguous() && t.strides()[1] == 2);
    }
    CHECK(dlbridge::live_allocations() == start);

    // Failure: release is not called (the C contract), nothing leaks.
    c_release_calls = 0;
    CHECK_THROWS(Tensor::from_data(buf, {-2}, {}, dlbridge::dtype_of<float>(), dlbridge::cpu(), false,
                                   &c_release, &marker),
                 DLB_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(Tensor::from_data(nullptr, {2}, {}, dlbridge::dtype_of<float>(), dlbridge::cpu(),
                                   false, &c_release, &marker),
                 DLB_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(Tensor::from_data(buf, {2, 3}, {1}, dlbridge::dtype_of<float>(), dlbridge::cpu(),
                                   false, &c_release, &marker),
                 DLB_ERR_INVALID_ARGUMENT);
    CHECK(c_release_calls == 0);
    CHECK(dlbridge::live_allocations() == start);

    // The callable form: called once, then destroyed.
    int calls = 0;
    int destroyed = 0;
    {
        Tensor t = Tensor::from_data(buf, {6}, {}, dlbridge::dtype_of<float>(), dlbridge::cpu(), true,
                                     [&calls, tr = Tracker(&destroyed)] { ++calls; });
        CHECK(t.is_read_only());
        CHECK(calls == 0 && destroyed == 0);
        ManagedTensorVersioned mt = t.to_dlpack_versioned();
        t.reset();
        CHECK(calls == 0); // the export keeps the memory alive
    }
    CHECK(calls == 1 && destroyed == 1);
    CHECK(dlbridge::live_allocations() == start);

    // The callable form on failure: not called, but destroyed (its box does not leak).
    calls = 0;
    destroyed = 0;
    CHECK_THROWS(Tensor::from_data(buf, {3, -1}, {}, dlbridge::dtype_of<float>(), dlbridge::cpu(),
                                   false, [&calls, tr = Tracker(&destroyed)] { ++calls; }),
                 DLB_ERR_INVALID_ARGUMENT);
    CHECK(calls == 0 && destroyed == 1);
    CHECK(dlbridge::live_allocations() == start);

    // A callable that owns the buffer (a moved-in std::vector) frees it with itself; an lvalue
    // callable is copied.
    {
        std::vector<double> owned(8, 1.5);
        double *p = owned.data();
        auto keep = [v = std::move(owned), &calls]() mutable {
            ++calls;
            v.clear();
        };
        calls = 0;
        Tensor t = Tensor::from_data(p, {2, 4}, {}, dlbridge::dtype_of<double>(), dlbridge::cpu(),
                                     false, std::move(keep));
        Tensor t2 = Tensor::from_data(buf, {6}, {}, dlbridge::dtype_of<float>(), dlbridge::cpu(),
                                      false, [&calls] { ++calls; });
        CHECK(t.cdata<double>()[7] == 1.5);
        t.data<double>()[0] = 2.0;
        CHECK(p[0] == 2.0);
    }
    CHECK(calls == 2);
    CHECK(dlbridge::live_allocations() == start);
}

// --- DLPack -------------------------------------------------------------------------------------
static int producer_deleted = 0;
static void producer_deleter(DLManagedTensorVersioned *self) {
    ++producer_deleted;
    delete self;
}
static void producer_deleter_legacy(DLManagedTensor *self) {
    ++producer_deleted;
    delete self;
}

static int64_t producer_shape[1] = {4};
static int64_t producer_strides[1] = {1};
static float producer_data[4] = {1, 2, 3, 4};

static DLManagedTensorVersioned *make_versioned(uint64_t flags) {
    auto *mt = new DLManagedTensorVersioned();
    mt->version = DLPackVersion{1, 0};
    mt->deleter = &producer_deleter;
    mt->flags = flags;
    mt->dl_tensor = DLTensor{producer_data, dlbridge::cpu(), 1, dlbridge::dtype_of<float>(),
                             producer_shape, producer_strides, 0};
    return mt;
}

static DLManagedTensor *make_legacy() {
    auto *mt = new DLManagedTensor();
    mt->deleter = &producer_deleter_legacy;
    mt->dl_tensor = DLTensor{producer_data, dlbridge::cpu(), 1, dlbridge::dtype_of<float>(),
                             producer_shape, producer_strides, 0};
    return mt;
}

static void test_managed_owners() {
    producer_deleted = 0;
    {
        ManagedTensorVersioned empty;
        CHECK(!empty && empty.get() == nullptr && empty.flags() == 0 && !empty.is_read_only());
        CHECK(empty.version().major == 0);
        CHECK_THROWS(empty.dltensor(), DLB_ERR_INVALID_ARGUMENT);
        ManagedTensor empty_legacy;
        CHECK(!empty_legacy);
        CHECK_THROWS(empty_legacy.dltensor(), DLB_ERR_INVALID_ARGUMENT);
    }
    CHECK(producer_deleted == 0);

    // The destructor runs the deleter once; moves transfer it.
    {
        ManagedTensorVersioned a(make_versioned(DLPACK_FLAG_BITMASK_READ_ONLY));
        CHECK(a && a.is_read_only() && !a.is_copied() && a.version().major == 1);
        CHECK(a->dl_tensor.ndim == 1 && a.dltensor().shape[0] == 4);
        ManagedTensorVersioned b(std::move(a));
        CHECK(!a && b);
        ManagedTensorVersioned c = ManagedTensorVersioned::adopt(make_versioned(0));
        c = std::move(b); // runs c's first deleter
        CHECK(producer_deleted == 1 && !b && c.is_read_only());
        c.reset(make_versioned(0)); // runs the second
        CHECK(producer_deleted == 2);
        DLManagedTensorVersioned *raw = c.release();
        CHECK(!c && c.release() == nullptr);
        raw->deleter(raw);
        CHECK(producer_deleted == 3);
        ManagedTensor l = ManagedTensor::adopt(make_legacy());
        ManagedTensor l2;
        l2 = std::move(l);
        CHECK(!l && l2 && l2.dltensor().data == producer_data);
    }
    CHECK(producer_deleted == 4);

    // A NULL deleter is allowed (nothing to run).
    {
        DLManagedTensorVersioned stack{};
        ManagedTensorVersioned s(&stack);
        CHECK(s.get() == &stack);
    }
}

static void test_dlpack() {
    const int64_t start = dlbridge::live_allocations();
    {
        Tensor t = Tensor::zeros({2, 2}, dlbridge::dtype_of<float>());
        t.data<float>()[1] = 7.0f;

        // Versioned export shares memory; the round trip shares it too, and adds no allocation.
        ManagedTensorVersioned mt = t.to_dlpack_versioned();
        CHECK(mt && !mt.is_read_only() && !mt.is_copied() && mt.version().major == 1);
        CHECK(mt.dltensor().data == t.cdata<float>() && mt.dltensor().byte_offset == 0);
        Tensor back = Tensor::from_dlpack(std::move(mt));
        CHECK(!mt);
        CHECK(back.shares_memory(t) && back.cdata<float>() == t.cdata<float>());
        CHECK(dlbridge::live_allocations() == start + 1);
        back.data<float>()[0] = 3.0f;
        CHECK(t.cdata<float>()[0] == 3.0f);

        // copy = true: new memory, IS_COPIED.
        ManagedTensorVersioned cp = t.to_dlpack_versioned(true);
        CHECK(cp.is_copied() && cp.dltensor().data != t.cdata<float>());
        CHECK(dlbridge::live_allocations() == start + 2);
        Tensor cpt = Tensor::from_dlpack(std::move(cp));
        CHECK(!cpt.shares_memory(t) && cpt.cdata<float>()[1] == 7.0f);
        cpt.reset();
        CHECK(dlbridge::live_allocations() == start + 1);

        // An export dropped unconsumed: its deleter runs in the owner's destructor.
        {
            ManagedTensorVersioned dropped = t.to_dlpack_versioned(true);
            CHECK(dlbridge::live_allocations() == start + 2);
        }
        CHECK(dlbridge::live_allocations() == start + 1);

        // The legacy form.
        ManagedTensor legacy = t.to_dlpack();
        CHECK(legacy && legacy.dltensor().data == t.cdata<float>());
        Tensor lt = Tensor::from_dlpack(std::move(legacy));
        CHECK(!legacy && lt.shares_memory(t));

        // Raw pointers: consumed on success.
        Tensor r1 = Tensor::from_dlpack(t.to_dlpack_versioned().release());
        Tensor r2 = Tensor::from_dlpack(t.to_dlpack().release());
        CHECK(r1.shares_memory(t) && r2.shares_memory(t));

        // The export outlives the tensor it came from.
        ManagedTensorVersioned late = t.to_dlpack_versioned();
        t.reset();
        back.reset();
        lt.reset();
        r1.reset();
        r2.reset();
        CHECK(dlbridge::live_allocations() == start + 1);
        CHECK(static_cast<const float *>(late.dltensor().data)[1] == 7.0f);
    }
    CHECK(dlbridge::live_allocations() == start);

    // Failure consumes: a version dlbridge does not read, the deleter has run when Error arrives.
    {
        Tensor t = Tensor::zeros({3}, dlbridge::dtype_of<int32_t>());
        ManagedTensorVersioned mt = t.to_dlpack_versioned();
        mt->version.major = 2;
        t.reset();
        CHECK(dlbridge::live_allocations() == start + 1);
        CHECK_THROWS(Tensor::from_dlpack(std::move(mt)), DLB_ERR_VERSION);
        CHECK(!mt);
        CHECK(dlbridge::live_allocations() == start);

        producer_deleted = 0;
        DLManagedTensorVersioned *raw = make_versioned(0);
        raw->version.major = 9;
        CHECK_THROWS(Tensor::from_dlpack(raw), DLB_ERR_VERSION);
        CHECK(producer_deleted == 1);
        DLManagedTensor *bad = make_legacy();
        bad->dl_tensor.ndim = -1;
        CHECK_THROWS(Tensor::from_dlpack(bad), DLB_ERR_INVALID_ARGUMENT);
        CHECK(producer_deleted == 2);
        CHECK_THROWS(Tensor::from_dlpack(ManagedTensorVersioned()), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(Tensor::from_dlpack(ManagedTensor()), DLB_ERR_INVALID_ARGUMENT);
    }
    CHECK(dlbridge::live_allocations() == start);

    // A foreign producer's tensor: zero-copy, its deleter runs once the last handle is gone.
    producer_deleted = 0;
    {
        Tensor f = Tensor::from_dlpack(ManagedTensorVersioned(make_versioned(0)));
        CHECK(f.cdata<float>() == producer_data && !f.is_read_only());
        CHECK(dlbridge::live_allocations() == start + 1);
        Tensor fa = f.alias();
        f.reset();
        CHECK(producer_deleted == 0);
        Tensor g = Tensor::from_dlpack(ManagedTensor(make_legacy()));
        CHECK(g.shares_memory(fa));
    }
    CHECK(producer_deleted == 2);
    CHECK(dlbridge::live_allocations() == start);
}

static void test_read_only() {
    const int64_t start = dlbridge::live_allocations();
    {
        // A writable tensor, exported, flagged READ_ONLY by the "producer", imported back.
        Tensor t = Tensor::zeros({4}, dlbridge::dtype_of<float>());
        ManagedTensorVersioned mt = t.to_dlpack_versioned();
        mt->flags |= DLPACK_FLAG_BITMASK_READ_ONLY;
        Tensor ro = Tensor::from_dlpack(std::move(mt));
        CHECK(ro.is_read_only() && !t.is_read_only() && ro.shares_memory(t));
        CHECK_THROWS(ro.data<float>(), DLB_ERR_READ_ONLY);
        CHECK(ro.cdata<float>() == t.cdata<float>());
        CHECK_THROWS(ro.data<int32_t>(), DLB_ERR_INVALID_ARGUMENT); // dtype checked first

        // Read-only is kept by alias and view, exported with the flag, and imported back so.
        CHECK(ro.alias().is_read_only() && ro.view({2}, {}, 1).is_read_only());
        ManagedTensorVersioned again = ro.to_dlpack_versioned();
        CHECK(again.is_read_only());
        Tensor ro2 = Tensor::from_dlpack(std::move(again));
        CHECK(ro2.is_read_only() && ro2.shares_memory(t));
        // The legacy struct cannot say read-only: refused.
        CHECK_THROWS(ro.to_dlpack(), DLB_ERR_READ_ONLY);
        // A copy is writable.
        Tensor w = ro.copy();
        CHECK(!w.is_read_only() && w.data<float>() != nullptr);
        ManagedTensorVersioned copied = ro.to_dlpack_versioned(true);
        CHECK(!copied.is_read_only() && copied.is_copied());
    }
    CHECK(dlbridge::live_allocations() == start);
}

static void test_cuda() {
    // Only where a GPU is present: the host <-> device round trip through the wrapper.
    if (dlbridge::cuda_device_count() == 0) {
        std::printf("no CUDA device: CUDA round trip skipped\n");
        return;
    }
    const int64_t start = dlbridge::live_allocations();
    {
        Tensor h = Tensor::empty({3}, dlbridge::dtype_of<int32_t>());
        int32_t *p = h.data<int32_t>();
        p[0] = 1;
        p[1] = 2;
        p[2] = 3;
        Tensor d = h.to_device(dlbridge::cuda(0));
        CHECK(d.device().device_type == kDLCUDA);
        Tensor z = Tensor::zeros({3}, dlbridge::dtype_of<int32_t>(), dlbridge::cuda(0));
        Tensor pinned = d.to_device(dlbridge::cuda_host());
        Tensor back = pinned.to_device(dlbridge::cpu());
        CHECK(back.cdata<int32_t>()[2] == 3);
        Tensor imported = Tensor::from_dlpack(d.to_dlpack_versioned());
        CHECK(imported.shares_memory(d));
    }
    CHECK(dlbridge::live_allocations() == start);
}

// Open file descriptors of this process.
static int open_fds() {
    int n = 0;
    if (DIR *dir = opendir("/proc/self/fd")) {
        while (readdir(dir) != nullptr) {
            ++n;
        }
        closedir(dir);
    }
    return n;
}

static void test_ipc() {
    const int64_t start = dlbridge::live_allocations();
    const int fds = open_fds();
    {
        Tensor t = Tensor::zeros_shared({2, 3}, dlbridge::dtype_of<int32_t>());
        CHECK(t.is_shared());
        CHECK(t.cdata<int32_t>()[5] == 0);
        IpcHandle h = t.to_ipc();
        CHECK(h.fd() >= 0);

        // Received in this process: the same memory, mapped again.
        Tensor same = Tensor::from_ipc(h);
        CHECK(same.is_shared());
        same.data<int32_t>()[1] = 7;
        CHECK(t.cdata<int32_t>()[1] == 7);

        // Received by a child: its write is seen here.
        const pid_t pid = fork();
        if (pid == 0) {
            try {
                Tensor c = Tensor::from_ipc(h);
                c.data<int32_t>()[4] = 42;
            } catch (...) {
                _exit(1);
            }
            _exit(0);
        }
        int status = 0;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        CHECK(t.cdata<int32_t>()[4] == 42);

        // Moving hands the one descriptor on; release_fd() gives it to the caller.
        IpcHandle moved = std::move(h);
        CHECK(h.fd() == -1 && moved.fd() >= 0);
        const int fd = moved.release_fd();
        CHECK(moved.fd() == -1 && fd >= 0);
        Tensor again = Tensor::from_ipc(moved.bytes, fd); // the descriptor stays ours
        CHECK(close(fd) == 0);
        CHECK(again.cdata<int32_t>()[4] == 42);

        // Private memory is shared by a copy first; shared memory by an alias.
        Tensor priv = Tensor::zeros({4}, dlbridge::dtype_of<float>());
        CHECK(!priv.is_shared());
        CHECK_THROWS(priv.to_ipc(), DLB_ERR_UNSUPPORTED);
        Tensor copy = priv.share();
        CHECK(copy.is_shared() && !copy.shares_memory(priv));
        Tensor alias = copy.share();
        CHECK(alias.shares_memory(copy));
        CHECK(Tensor::empty_shared({8}, dlbridge::dtype_of<uint8_t>()).is_shared());

        // Refused: a corrupted handle, a truncated one, the empty handle, the wrong descriptor.
        IpcHandle bad = copy.to_ipc();
        bad.bytes[100] ^= 1;
        CHECK_THROWS(Tensor::from_ipc(bad), DLB_ERR_INVALID_ARGUMENT);
        IpcHandle good = copy.to_ipc();
        CHECK_THROWS(Tensor::from_ipc(Span<const uint8_t>(good.bytes.data(), 100), good.fd()),
                     DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(Tensor::from_ipc(IpcHandle()), DLB_ERR_INVALID_ARGUMENT);
        IpcHandle other = t.to_ipc();
        CHECK_THROWS(Tensor::from_ipc(good.bytes, other.fd()), DLB_ERR_INVALID_ARGUMENT);

        // An empty Tensor.
        CHECK(!Tensor().is_shared());
        CHECK_THROWS(Tensor().to_ipc(), DLB_ERR_INVALID_ARGUMENT);
        CHECK_THROWS(Tensor().share(), DLB_ERR_INVALID_ARGUMENT);
    }
    // Every descriptor and every mapping is gone again.
    CHECK(open_fds() == fds);
    CHECK(dlbridge::live_allocations() == start);
}

int main() {
    const int64_t start = dlbridge::live_allocations();
    test_dtypes_and_helpers();
    test_span();
    test_errors();
    test_lifecycle();
    test_inspection();
    test_data_access();
    test_new_handles();
    test_from_data();
    test_managed_owners();
    test_dlpack();
    test_read_only();
    test_cuda();
    test_ipc();
    CHECK(dlbridge::live_allocations() == start);
    if (failures != 0) {
        std::printf("test_hpp: %d of %d checks FAILED\n", failures, checks);
        return 1;
    }
    std::printf("test_hpp: all %d checks passed (dlbridge %s)\n", checks, dlbridge::version());
    return 0;
}
