// dlbridge.hpp: a header-only C++17 wrapper over the dlbridge C API (dlbridge.h).
//
// What it adds to the C API, and nothing more:
// - RAII owners: dlbridge::Tensor owns one dlb_tensor handle; ManagedTensorVersioned and
//   ManagedTensor own one DLPack export (or any producer's managed tensor) and run its deleter.
//   All three are move-only; a moved-from owner is empty and its destructor does nothing.
// - Errors as exceptions: every failing C call becomes a dlbridge::Error carrying the dlb_status
//   and a copy of dlb_last_error(), taken right after the failing call.
// - Element access checked against the dtype (Tensor::data<T>()).
//
// Ownership follows the C API exactly (see the comment at the top of dlbridge.h):
// - A Tensor is one handle. Handles share memory; the memory goes when the last handle or
//   export using it is gone, whichever is last, on whichever thread.
// - alias() and view() share memory with the tensor they come from; copy(), cast() and
//   to_device() always make new memory; to_dlpack*() exports share memory unless copy = true.
// - Importing (Tensor::from_dlpack) always consumes the managed tensor, on success and failure.
//
// Threads: const members only read the handle and may run on several threads at once;
// destruction, assignment, release(), reset() and the mutable data<T>() need exclusive use.
//
// Nothing here is compiled into libdlbridge: include this header and link -ldlbridge.
// Needs C++17. Every function is inline; no exception escapes a destructor.

#ifndef DLBRIDGE_HPP
#define DLBRIDGE_HPP

#include "dlbridge.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace dlbridge {

// ------------------------------------------------------------------------------------------------
// Status and errors
// ------------------------------------------------------------------------------------------------

/// The enumerator's name of a status ("DLB_OK", "DLB_ERR_INVALID_ARGUMENT", ...): the C API's
/// dlb_status_str. The string is static.
inline const char *status_name(dlb_status status) noexcept {
    return dlb_status_str(static_cast<int32_t>(status));
}

/// A failed dlbridge call. status() is the dlb_status; message() is the library's message,
/// copied (so it stays valid however many dlbridge calls follow); what() is
/// "<status name>: <message>".
/// The wrapper also throws Error itself, always with DLB_ERR_INVALID_ARGUMENT, for misuse it
/// catches before reaching the C API (an empty Tensor where a tensor is needed, a data<T>()
/// whose T does not match the dtype, strides of the wrong length, more than INT32_MAX extents);
/// then message() is the wrapper's and dlb_last_error() is left as it was.
class Error : public std::runtime_error {
  public:
    /// Reads dlb_last_error() now: construct it right after the failing call, before any other
    /// dlbridge call on this thread (check() does).
    explicit Error(dlb_status status) : Error(status, last_error_or_empty()) {}

    /// An error with a message of the caller's choosing; dlb_last_error() is not read.
    Error(dlb_status status, const std::string &message)
        : std::runtime_error(std::string(status_name(status)) + ": " + message),
          status_(status), message_(message) {}

    /// The status of the failed call (never DLB_OK).
    dlb_status status() const noexcept { return status_; }

    /// The message alone, as dlb_last_error() gave it (or as the wrapper wrote it).
    const std::string &message() const noexcept { return message_; }

  private:
    static std::string last_error_or_empty() {
        const char *m = dlb_last_error();
        return m != nullptr ? std::string(m) : std::string();
    }

    dlb_status status_;
    std::string message_;
};

/// Throws Error(status) (with dlb_last_error()'s message) unless status is DLB_OK. Call it on
/// the status of a C call directly, before any other dlbridge call on this thread.
inline void check(dlb_status status) {
    if (status != DLB_OK) {
        throw Error(status);
    }
}

// ------------------------------------------------------------------------------------------------
// Library-wide queries
// ------------------------------------------------------------------------------------------------

/// The library version, "MAJOR.MINOR.PATCH" (static string: never freed).
inline const char *version() noexcept { return dlb_version(); }

/// dlb_live_allocations(): how many data buffers dlbridge keeps alive right now.
inline int64_t live_allocations() noexcept { return dlb_live_allocations(); }

/// dlb_cuda_device_count(): usable CUDA devices, 0 without a driver or a GPU. Never fails.
inline int32_t cuda_device_count() noexcept { return dlb_cuda_device_count(); }

/// This thread's last C API error message ("" if none). Error already carries a copy of it.
inline const char *last_error() noexcept { return dlb_last_error(); }

// ------------------------------------------------------------------------------------------------
// Devices and dtypes
// ------------------------------------------------------------------------------------------------

/// Host memory.
constexpr DLDevice cpu() noexcept { return DLDevice{kDLCPU, 0}; }
/// CUDA device memory on device `id`.
constexpr DLDevice cuda(int32_t id = 0) noexcept { return DLDevice{kDLCUDA, id}; }
/// Pinned host memory (kDLCUDAHost; device_id 0).
constexpr DLDevice cuda_host() noexcept { return DLDevice{kDLCUDAHost, 0}; }

/// Whether two dtypes are the same (code, bits and lanes).
constexpr bool same_dtype(DLDataType a, DLDataType b) noexcept {
    return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}

/// Whether two devices are the same (type and index).
constexpr bool same_device(DLDevice a, DLDevice b) noexcept {
    return a.device_type == b.device_type && a.device_id == b.device_id;
}

namespace detail {
template <class T, class = void> struct dtype_traits {
    static constexpr bool supported = false;
};
template <> struct dtype_traits<bool> {
    static constexpr bool supported = sizeof(bool) == 1;
    static constexpr uint8_t code = kDLBool;
    static constexpr uint8_t bits = 8;
};
template <> struct dtype_traits<float> {
    static constexpr bool supported = std::numeric_limits<float>::is_iec559 && sizeof(float) == 4;
    static constexpr uint8_t code = kDLFloat;
    static constexpr uint8_t bits = 32;
};
template <> struct dtype_traits<double> {
    static constexpr bool supported = std::numeric_limits<double>::is_iec559 && sizeof(double) == 8;
    static constexpr uint8_t code = kDLFloat;
    static constexpr uint8_t bits = 64;
};
// The standard signed and unsigned integer types of 1, 2, 4 or 8 bytes (int8_t .. uint64_t and
// whatever other spellings share their sizes, such as long long). Plain char, wchar_t and the
// charN_t types are not numbers and are left out.
template <class T>
struct dtype_traits<
    T, std::enable_if_t<std::is_integral<T>::value && !std::is_same<T, bool>::value &&
                        !std::is_same<T, char>::value && !std::is_same<T, wchar_t>::value &&
                        !std::is_same<T, char16_t>::value && !std::is_same<T, char32_t>::value &&
                        (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8)>> {
    static constexpr bool supported = true;
    static constexpr uint8_t code = std::is_signed<T>::value ? kDLInt : kDLUInt;
    static constexpr uint8_t bits = static_cast<uint8_t>(sizeof(T) * 8);
};
} // namespace detail

/// Whether dtype_of<T>() exists: int8_t..int64_t, uint8_t..uint64_t, float, double, bool
/// (cv-qualifiers ignored).
template <class T>
constexpr bool has_dtype = detail::dtype_traits<std::remove_cv_t<T>>::supported;

/// The DLPack dtype of a C++ element type, e.g. dtype_of<float>() == {kDLFloat, 32, 1} and
/// dtype_of<bool>() == {kDLBool, 8, 1}. Other types do not compile.
template <class T> constexpr DLDataType dtype_of() noexcept {
    static_assert(has_dtype<T>,
                  "dlbridge::dtype_of<T>: T must be int8_t..int64_t, uint8_t..uint64_t, float, "
                  "double or bool");
    using Tr = detail::dtype_traits<std::remove_cv_t<T>>;
    return DLDataType{Tr::code, Tr::bits, 1};
}

/// A dtype's usual name: "float32", "int64", "bool", "bfloat16", "complex64", ...; with "x<lanes>"
/// appended for vector types; "dtype(code=C, bits=B, lanes=L)" for codes it does not name.
inline std::string dtype_name(DLDataType dtype) {
    const char *base = nullptr;
    switch (dtype.code) {
    case kDLInt: base = "int"; break;
    case kDLUInt: base = "uint"; break;
    case kDLFloat: base = "float"; break;
    case kDLBfloat: base = "bfloat"; break;
    case kDLComplex: base = "complex"; break;
    case kDLOpaqueHandle: base = "handle"; break;
    case kDLBool: base = "bool"; break;
    default: break;
    }
    if (base == nullptr) {
        return "dtype(code=" + std::to_string(dtype.code) + ", bits=" + std::to_string(dtype.bits) +
               ", lanes=" + std::to_string(dtype.lanes) + ")";
    }
    std::string name = base;
    if (dtype.code != kDLBool || dtype.bits != 8) {
        name += std::to_string(dtype.bits);
    }
    if (dtype.lanes != 1) {
        name += "x" + std::to_string(dtype.lanes);
    }
    return name;
}

// ------------------------------------------------------------------------------------------------
// Span
// ------------------------------------------------------------------------------------------------

/// A non-owning view of `size` contiguous T (C++17 has no std::span). It never copies or frees
/// anything: whatever it points into must outlive it.
/// A Span<const T> converts from a braced list ({2, 3}), a std::vector or std::array, a C array,
/// or a Span<T>; as a function parameter a braced list lives until the call returns.
template <class T> class Span {
  public:
    using element_type = T;
    using value_type = std::remove_cv_t<T>;
    using size_type = std::size_t;
    using pointer = T *;
    using reference = T &;
    using iterator = T *;

    /// Empty: data() is nullptr, size() is 0.
    constexpr Span() noexcept = default;

    /// `size` elements starting at `data` (data may be nullptr when size is 0).
    constexpr Span(T *data, std::size_t size) noexcept : data_(data), size_(size) {}

    /// The elements of a C array.
    template <std::size_t N> constexpr Span(T (&array)[N]) noexcept : data_(array), size_(N) {}

    /// The elements of a braced list (Span<const T> only). Valid while the list lives: for a
    /// function argument, until the call returns.
    constexpr Span(std::initializer_list<value_type> list) noexcept {
        static_assert(std::is_const<T>::value, "only a Span<const T> can view an initializer_list");
        // Assigned here rather than in the member initializers, where GCC warns
        // (-Winit-list-lifetime) although a parameter's list outlives the call.
        data_ = list.begin();
        size_ = list.size();
    }

    /// The elements of a contiguous container with data() and size() (std::vector, std::array,
    /// another Span of a convertible element type).
    template <class C,
              class = std::enable_if_t<
                  !std::is_array<std::remove_reference_t<C>>::value &&
                  !std::is_same<std::remove_cv_t<std::remove_reference_t<C>>, Span>::value &&
                  std::is_convertible<
                      std::remove_pointer_t<decltype(std::declval<C &>().data())> (*)[],
                      T (*)[]>::value &&
                  std::is_convertible<decltype(std::declval<C &>().size()), std::size_t>::value>>
    constexpr Span(C &&container) noexcept
        : data_(container.data()), size_(static_cast<std::size_t>(container.size())) {}

    constexpr T *data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }
    constexpr bool empty() const noexcept { return size_ == 0; }
    constexpr T *begin() const noexcept { return data_; }
    constexpr T *end() const noexcept { return data_ + size_; }
    /// Unchecked: i < size().
    constexpr T &operator[](std::size_t i) const noexcept { return data_[i]; }

  private:
    T *data_ = nullptr;
    std::size_t size_ = 0;
};

namespace detail {
inline int32_t to_ndim(std::size_t n) {
    if (n > static_cast<std::size_t>(std::numeric_limits<int32_t>::max())) {
        throw Error(DLB_ERR_INVALID_ARGUMENT, "more than INT32_MAX extents");
    }
    return static_cast<int32_t>(n);
}

// Strides for the C API: an empty span means NULL (row-major); otherwise one per extent.
inline const int64_t *strides_arg(Span<const int64_t> shape, Span<const int64_t> strides) {
    if (strides.empty()) {
        return nullptr;
    }
    if (strides.size() != shape.size()) {
        throw Error(DLB_ERR_INVALID_ARGUMENT,
                    "strides has " + std::to_string(strides.size()) + " entries for " +
                        std::to_string(shape.size()) + " extents");
    }
    return strides.data();
}

// from_data's callable, type-erased. The C API calls release_trampoline(ctx) exactly once.
struct ReleaseBase {
    virtual ~ReleaseBase() = default;
    virtual void run() noexcept = 0;
};
template <class F> struct ReleaseBox final : ReleaseBase {
    template <class G> explicit ReleaseBox(G &&g) : f(std::forward<G>(g)) {}
    // A callable that throws here terminates the program: the exception cannot cross the C API.
    void run() noexcept override { f(); }
    F f;
};
inline void release_trampoline(void *ctx) noexcept {
    std::unique_ptr<ReleaseBase> box(static_cast<ReleaseBase *>(ctx));
    box->run();
}

// The common part of the two DLPack owners: M is DLManagedTensorVersioned or DLManagedTensor.
template <class M> class ManagedOwner {
  public:
    ManagedOwner() noexcept = default;
    explicit ManagedOwner(M *mt) noexcept : mt_(mt) {}
    ~ManagedOwner() { reset(); }
    ManagedOwner(const ManagedOwner &) = delete;
    ManagedOwner &operator=(const ManagedOwner &) = delete;
    ManagedOwner(ManagedOwner &&other) noexcept : mt_(other.release()) {}
    ManagedOwner &operator=(ManagedOwner &&other) noexcept {
        if (this != &other) {
            reset(other.release());
        }
        return *this;
    }

    /// The managed tensor, still owned by this object (nullptr when empty).
    M *get() const noexcept { return mt_; }
    /// Member access to the managed tensor (non-empty only).
    M *operator->() const noexcept { return mt_; }
    /// Whether this object owns a managed tensor.
    explicit operator bool() const noexcept { return mt_ != nullptr; }

    /// Hands the managed tensor over: the caller now calls its deleter (or passes it to a
    /// consumer that does). This object becomes empty. nullptr when it was empty.
    [[nodiscard]] M *release() noexcept {
        M *mt = mt_;
        mt_ = nullptr;
        return mt;
    }

    /// Runs the owned tensor's deleter (if it has one) and takes ownership of `mt` instead.
    void reset(M *mt = nullptr) noexcept {
        M *old = mt_;
        mt_ = mt;
        if (old != nullptr && old->deleter != nullptr) {
            old->deleter(old);
        }
    }

    /// The described tensor (borrowed from the managed tensor). Throws Error
    /// (DLB_ERR_INVALID_ARGUMENT) when empty.
    const DLTensor &dltensor() const {
        if (mt_ == nullptr) {
            throw Error(DLB_ERR_INVALID_ARGUMENT, "empty DLPack managed tensor owner");
        }
        return mt_->dl_tensor;
    }

  private:
    M *mt_ = nullptr;
};
} // namespace detail

// ------------------------------------------------------------------------------------------------
// DLPack owners
// ------------------------------------------------------------------------------------------------

/// Owns one DLManagedTensorVersioned (a dlbridge export, or any DLPack 1.x producer's): its
/// destructor (and reset()) calls the deleter once if it still owns it. Move-only; moved-from
/// is empty. release() hands the raw pointer over (then the new owner calls the deleter);
/// Tensor::from_dlpack(std::move(owner)) hands it to dlbridge. It never copies data and adds no
/// reference of its own: it is exactly the receiver's duty the DLPack protocol describes.
class ManagedTensorVersioned : public detail::ManagedOwner<DLManagedTensorVersioned> {
  public:
    using ManagedOwner::ManagedOwner;

    /// Takes ownership of `mt` (nullptr gives an empty owner).
    [[nodiscard]] static ManagedTensorVersioned adopt(DLManagedTensorVersioned *mt) noexcept {
        return ManagedTensorVersioned(mt);
    }

    /// The flags word (DLPACK_FLAG_BITMASK_*); 0 when empty.
    uint64_t flags() const noexcept { return get() != nullptr ? get()->flags : 0; }
    /// DLPACK_FLAG_BITMASK_READ_ONLY is set: the consumer must not write the data.
    bool is_read_only() const noexcept { return (flags() & DLPACK_FLAG_BITMASK_READ_ONLY) != 0; }
    /// DLPACK_FLAG_BITMASK_IS_COPIED is set: the producer made a fresh copy for this export.
    bool is_copied() const noexcept { return (flags() & DLPACK_FLAG_BITMASK_IS_COPIED) != 0; }
    /// The producer's DLPack version ({0, 0} when empty).
    DLPackVersion version() const noexcept {
        return get() != nullptr ? get()->version : DLPackVersion{0, 0};
    }
};

/// Owns one legacy (unversioned) DLManagedTensor, with the same rules as
/// ManagedTensorVersioned. The legacy struct has no flags: it cannot say "read-only".
class ManagedTensor : public detail::ManagedOwner<DLManagedTensor> {
  public:
    using ManagedOwner::ManagedOwner;

    /// Takes ownership of `mt` (nullptr gives an empty owner).
    [[nodiscard]] static ManagedTensor adopt(DLManagedTensor *mt) noexcept {
        return ManagedTensor(mt);
    }
};

// ------------------------------------------------------------------------------------------------
// IpcHandle
// ------------------------------------------------------------------------------------------------

/// What Tensor::to_ipc() gives to send to another process (dlb_tensor_to_ipc): the handle's
/// DLB_IPC_HANDLE_SIZE bytes, to be sent as they are, and for shared host memory a new file
/// descriptor of the segment (close-on-exec), to be passed on with SCM_RIGHTS or inherited by a
/// child. The descriptor is owned: the destructor closes it unless release_fd() took it. -1 for
/// CUDA memory (the bytes carry a CUDA IPC handle) and for an empty IpcHandle. Move-only.
class IpcHandle {
  public:
    /// The handle's bytes (opaque; the same on every platform).
    std::array<uint8_t, DLB_IPC_HANDLE_SIZE> bytes{};

    /// No handle: all-zero bytes (which from_ipc() refuses) and no descriptor.
    IpcHandle() noexcept = default;
    ~IpcHandle() { close_fd(); }
    IpcHandle(const IpcHandle &) = delete;
    IpcHandle &operator=(const IpcHandle &) = delete;
    IpcHandle(IpcHandle &&other) noexcept : bytes(other.bytes), fd_(other.release_fd()) {}
    /// Closes the descriptor this IpcHandle held, then takes other's bytes and descriptor.
    IpcHandle &operator=(IpcHandle &&other) noexcept {
        if (this != &other) {
            close_fd();
            bytes = other.bytes;
            fd_ = other.release_fd();
        }
        return *this;
    }

    /// The descriptor, still owned by this IpcHandle (-1 when there is none).
    int fd() const noexcept { return fd_; }

    /// Hands the descriptor over: the caller now closes it. -1 when there was none.
    [[nodiscard]] int release_fd() noexcept {
        const int fd = fd_;
        fd_ = -1;
        return fd;
    }

  private:
    friend class Tensor;

    void close_fd() noexcept {
#if defined(__unix__) || defined(__APPLE__)
        if (fd_ >= 0) {
            ::close(fd_);
        }
#endif
        fd_ = -1;
    }

    int fd_ = -1;
};

// ------------------------------------------------------------------------------------------------
// Tensor
// ------------------------------------------------------------------------------------------------

/// Owns one dlb_tensor handle: the destructor calls dlb_tensor_free. Move-only; a moved-from
/// (or released, or default-constructed) Tensor is empty: operator bool is false, its
/// destructor does nothing, members that query the tensor throw Error (DLB_ERR_INVALID_ARGUMENT)
/// and the is_* / shares_memory queries return false.
/// Copying the handle is explicit: alias() (same memory), copy() (new memory).
class Tensor {
  public:
    /// An empty Tensor.
    Tensor() noexcept = default;
    ~Tensor() { reset(); }
    Tensor(const Tensor &) = delete;
    Tensor &operator=(const Tensor &) = delete;
    Tensor(Tensor &&other) noexcept : t_(other.release()) {}
    /// Frees the handle this Tensor held, then takes other's.
    Tensor &operator=(Tensor &&other) noexcept {
        if (this != &other) {
            reset(other.release());
        }
        return *this;
    }

    /// Takes ownership of a handle from the C API (nullptr gives an empty Tensor).
    [[nodiscard]] static Tensor adopt(dlb_tensor *t) noexcept { return Tensor(t); }

    /// The handle, still owned by this Tensor (nullptr when empty): for C calls that borrow it.
    dlb_tensor *get() const noexcept { return t_; }

    /// Hands the handle over: the caller now frees it with dlb_tensor_free. This Tensor becomes
    /// empty. nullptr when it was empty.
    [[nodiscard]] dlb_tensor *release() noexcept {
        dlb_tensor *t = t_;
        t_ = nullptr;
        return t;
    }

    /// Frees the handle held (dlb_tensor_free) and takes ownership of `t` instead.
    void reset(dlb_tensor *t = nullptr) noexcept {
        dlb_tensor *old = t_;
        t_ = t;
        dlb_tensor_free(old);
    }

    /// Whether this Tensor holds a handle.
    explicit operator bool() const noexcept { return t_ != nullptr; }

    // --- Creation ---------------------------------------------------------------------------

    /// New uninitialised row-major memory of `shape` (dlb_tensor_empty; aligned to 256 bytes).
    /// kDLCUDA / kDLCUDAHost need a CUDA driver and device, else Error(DLB_ERR_DEVICE).
    [[nodiscard]] static Tensor empty(Span<const int64_t> shape, DLDataType dtype,
                                      DLDevice device = cpu()) {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_empty(shape.data(), detail::to_ndim(shape.size()), dtype, device, &out));
        return Tensor(out);
    }

    /// As empty(), with every byte zero (dlb_tensor_zeros).
    [[nodiscard]] static Tensor zeros(Span<const int64_t> shape, DLDataType dtype,
                                      DLDevice device = cpu()) {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_zeros(shape.data(), detail::to_ndim(shape.size()), dtype, device, &out));
        return Tensor(out);
    }

    /// Wraps memory the caller owns, without copying (dlb_tensor_from_data). `strides` (in
    /// elements) empty means row-major, else it has one entry per extent. dlbridge calls
    /// `release(ctx)` exactly once (release may be nullptr), on whichever thread drops the last
    /// tensor or export using the memory; until then the memory must stay valid.
    /// On failure (Error thrown) `release` is NOT called: the memory is still the caller's.
    [[nodiscard]] static Tensor from_data(void *data, Span<const int64_t> shape,
                                          Span<const int64_t> strides, DLDataType dtype,
                                          DLDevice device, bool read_only,
                                          void (*release)(void *ctx), void *ctx) {
        const int64_t *strides_ptr = detail::strides_arg(shape, strides);
        dlb_tensor *out = nullptr;
        check(dlb_tensor_from_data(data, shape.data(), strides_ptr,
                                   detail::to_ndim(shape.size()), dtype, device, read_only,
                                   release, ctx, &out));
        return Tensor(out);
    }

    /// As the overload above, with a C++ callable instead of a function pointer and context:
    /// `on_release` (invocable with no arguments; moved or copied into a heap box) is called
    /// exactly once when the memory is no longer used, on whichever thread that is, then
    /// destroyed. It must not throw (an exception there calls std::terminate).
    /// On failure (Error thrown) it follows the C API: the callable is NOT called, the memory
    /// is still the caller's. The box made here is destroyed, so nothing leaks; note that a
    /// callable which owns the buffer itself (a captured std::unique_ptr or std::vector) frees
    /// it when destroyed, whether called or not.
    template <class F, class = std::enable_if_t<std::is_invocable<std::decay_t<F> &>::value>>
    [[nodiscard]] static Tensor from_data(void *data, Span<const int64_t> shape,
                                          Span<const int64_t> strides, DLDataType dtype,
                                          DLDevice device, bool read_only, F &&on_release) {
        const int64_t *strides_ptr = detail::strides_arg(shape, strides);
        const int32_t ndim = detail::to_ndim(shape.size());
        std::unique_ptr<detail::ReleaseBase> box(
            new detail::ReleaseBox<std::decay_t<F>>(std::forward<F>(on_release)));
        dlb_tensor *out = nullptr;
        // throw Error(...) reads dlb_last_error() before unwinding destroys the box.
        check(dlb_tensor_from_data(data, shape.data(), strides_ptr, ndim, dtype, device,
                                   read_only, &detail::release_trampoline, box.get(), &out));
        box.release(); // now dlbridge's: release_trampoline deletes it
        return Tensor(out);
    }

    // --- New handles and new memory ---------------------------------------------------------

    /// A new handle on the same memory (dlb_tensor_alias): writes through either are seen
    /// through both; read-only stays read-only. Each handle is freed on its own.
    [[nodiscard]] Tensor alias() const {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_alias(t_, &out));
        return Tensor(out);
    }

    /// A strided view sharing this tensor's memory (dlb_tensor_view). `offset` and `strides`
    /// count elements from this tensor's first element; `strides` empty means row-major;
    /// negative and zero strides are allowed. Every element must lie inside the memory this
    /// tensor can reach, else Error(DLB_ERR_INVALID_ARGUMENT).
    [[nodiscard]] Tensor view(Span<const int64_t> shape, Span<const int64_t> strides = {},
                              int64_t offset = 0) const {
        const int64_t *strides_ptr = detail::strides_arg(shape, strides);
        dlb_tensor *out = nullptr;
        check(dlb_tensor_view(t_, shape.data(), strides_ptr, detail::to_ndim(shape.size()), offset,
                              &out));
        return Tensor(out);
    }

    /// A copy in new memory (dlb_tensor_copy): row-major, writable, independent, same device.
    [[nodiscard]] Tensor copy() const {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_copy(t_, &out));
        return Tensor(out);
    }

    /// A converting copy in new memory (dlb_tensor_cast): row-major, writable. Complex to real
    /// gives Error(DLB_ERR_UNSUPPORTED).
    [[nodiscard]] Tensor cast(DLDataType dtype) const {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_cast(t_, dtype, &out));
        return Tensor(out);
    }

    /// A copy in new memory on `device` (dlb_tensor_to_device: kDLCPU, kDLCUDA, kDLCUDAHost),
    /// complete when it returns.
    [[nodiscard]] Tensor to_device(DLDevice device) const {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_to_device(t_, device, &out));
        return Tensor(out);
    }

    // --- Inspection -------------------------------------------------------------------------

    /// The tensor as a DLTensor, borrowed from this handle (valid while it lives, and not after
    /// a move or release). data points at the first element, byte_offset is 0, strides is
    /// non-NULL whenever ndim > 0. Throws Error(DLB_ERR_INVALID_ARGUMENT) when empty.
    const DLTensor &dltensor() const {
        const DLTensor *d = dlb_tensor_dltensor(t_);
        if (d == nullptr) {
            throw Error(DLB_ERR_INVALID_ARGUMENT, "empty dlbridge::Tensor (moved from or released)");
        }
        return *d;
    }

    /// The extents, borrowed from this handle (valid while it lives).
    Span<const int64_t> shape() const {
        const DLTensor &d = dltensor();
        return Span<const int64_t>(d.shape, static_cast<std::size_t>(d.ndim));
    }

    /// The strides in elements, borrowed from this handle (valid while it lives).
    Span<const int64_t> strides() const {
        const DLTensor &d = dltensor();
        return Span<const int64_t>(d.strides, static_cast<std::size_t>(d.ndim));
    }

    /// The number of extents.
    int32_t ndim() const { return dltensor().ndim; }

    /// The number of elements (1 for a 0-d tensor, 0 when an extent is 0).
    int64_t numel() const {
        int64_t n = 1;
        for (int64_t e : shape()) {
            n *= e;
        }
        return n;
    }

    DLDataType dtype() const { return dltensor().dtype; }
    DLDevice device() const { return dltensor().device; }

    /// Whether the data is read-only (false when empty).
    bool is_read_only() const noexcept { return dlb_tensor_is_read_only(t_); }
    /// Whether the tensor is row-major compact (false when empty).
    bool is_contiguous() const noexcept { return dlb_tensor_is_contiguous(t_); }
    /// Whether the byte ranges of the two tensors overlap on the same device (false when either
    /// is empty or has no elements).
    bool shares_memory(const Tensor &other) const noexcept {
        return dlb_tensor_shares_memory(t_, other.t_);
    }

    // --- Element access ---------------------------------------------------------------------

    /// A writable pointer to the first element (dlb_tensor_data_mut), borrowed: valid while the
    /// memory lives. T must match the dtype exactly (dtype_of<T>()), else
    /// Error(DLB_ERR_INVALID_ARGUMENT); a read-only tensor gives Error(DLB_ERR_READ_ONLY).
    /// Index it with strides(): the elements need not be contiguous. For kDLCUDA tensors it is
    /// a device pointer. Needs exclusive use of this handle.
    template <class T> T *data() {
        static_assert(!std::is_const<T>::value,
                      "dlbridge::Tensor::data<const T>(): use cdata<T>() for read access");
        check_element<T>();
        void *p = nullptr;
        check(dlb_tensor_data_mut(t_, &p));
        return static_cast<T *>(p);
    }

    /// A read-only pointer to the first element, borrowed: valid while the memory lives. Works
    /// on read-only tensors. T must match the dtype, else Error(DLB_ERR_INVALID_ARGUMENT).
    template <class T> const T *data() const {
        check_element<T>();
        return static_cast<const T *>(dltensor().data);
    }

    /// data<T>() const, callable on a non-const Tensor (a read-only tensor's data).
    template <class T> const T *cdata() const { return data<T>(); }

    // --- DLPack -----------------------------------------------------------------------------

    /// Exports as a DLPack 1.x versioned managed tensor (dlb_tensor_to_dlpack_versioned).
    /// copy = false shares this tensor's memory (READ_ONLY flag set when this is read-only);
    /// copy = true exports a fresh row-major copy (IS_COPIED flag set). The export lives on its
    /// own: this Tensor may be destroyed first.
    [[nodiscard]] ManagedTensorVersioned to_dlpack_versioned(bool copy = false) const {
        DLManagedTensorVersioned *out = nullptr;
        check(dlb_tensor_to_dlpack_versioned(t_, copy, &out));
        return ManagedTensorVersioned(out);
    }

    /// Exports as a legacy DLManagedTensor sharing this tensor's memory (dlb_tensor_to_dlpack).
    /// A read-only tensor gives Error(DLB_ERR_READ_ONLY): the legacy struct cannot say so.
    [[nodiscard]] ManagedTensor to_dlpack() const {
        DLManagedTensor *out = nullptr;
        check(dlb_tensor_to_dlpack(t_, &out));
        return ManagedTensor(out);
    }

    /// Imports zero-copy (dlb_tensor_from_dlpack_versioned). Always consumes `mt`: it is empty
    /// afterwards; on failure the deleter has already run when Error is thrown. The READ_ONLY
    /// flag makes the tensor read-only; a major version other than 1 gives
    /// Error(DLB_ERR_VERSION).
    [[nodiscard]] static Tensor from_dlpack(ManagedTensorVersioned &&mt) {
        return from_dlpack(mt.release());
    }

    /// Imports a legacy managed tensor zero-copy (dlb_tensor_from_dlpack). Always consumes
    /// `mt`, as above.
    [[nodiscard]] static Tensor from_dlpack(ManagedTensor &&mt) { return from_dlpack(mt.release()); }

    /// Imports a raw versioned managed tensor. Always consumes it, success or failure.
    [[nodiscard]] static Tensor from_dlpack(DLManagedTensorVersioned *mt) {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_from_dlpack_versioned(mt, &out));
        return Tensor(out);
    }

    /// Imports a raw legacy managed tensor. Always consumes it, success or failure.
    [[nodiscard]] static Tensor from_dlpack(DLManagedTensor *mt) {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_from_dlpack(mt, &out));
        return Tensor(out);
    }

    // --- Across processes (docs/c-api.md, "Across processes") --------------------------------

    /// New host memory other processes can map (dlb_tensor_empty_shared): an anonymous sealed
    /// memory file, page aligned, zeroed (as zeros_shared), passed on with to_ipc().
    [[nodiscard]] static Tensor empty_shared(Span<const int64_t> shape, DLDataType dtype) {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_empty_shared(shape.data(), detail::to_ndim(shape.size()), dtype, &out));
        return Tensor(out);
    }

    /// As empty_shared() (dlb_tensor_zeros_shared).
    [[nodiscard]] static Tensor zeros_shared(Span<const int64_t> shape, DLDataType dtype) {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_zeros_shared(shape.data(), detail::to_ndim(shape.size()), dtype, &out));
        return Tensor(out);
    }

    /// Whether the memory can be sent to another process by to_ipc() (dlb_tensor_is_shared):
    /// made shared, received by from_ipc(), or a view or alias of such a tensor. False when
    /// empty.
    bool is_shared() const noexcept { return dlb_tensor_is_shared(t_); }

    /// A tensor another process can receive (dlb_tensor_share): a new alias when the memory is
    /// shared memory or dlbridge's own CUDA memory, else a row-major copy in new shared memory.
    /// Pinned host memory and CUDA memory dlbridge did not allocate give
    /// Error(DLB_ERR_UNSUPPORTED).
    [[nodiscard]] Tensor share() const {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_share(t_, &out));
        return Tensor(out);
    }

    /// Describes this tensor for another process (dlb_tensor_to_ipc). Private host memory gives
    /// Error(DLB_ERR_UNSUPPORTED): call share() first.
    [[nodiscard]] IpcHandle to_ipc() const {
        IpcHandle handle;
        int32_t fd = -1;
        check(dlb_tensor_to_ipc(t_, handle.bytes.data(), &fd));
        handle.fd_ = fd;
        return handle;
    }

    /// The tensor a handle describes, on the same memory (dlb_tensor_from_ipc): `fd` is the
    /// descriptor received with it (-1 for CUDA), still the caller's afterwards. A truncated,
    /// corrupted or foreign handle, or a descriptor that does not match it, gives
    /// Error(DLB_ERR_INVALID_ARGUMENT).
    [[nodiscard]] static Tensor from_ipc(Span<const uint8_t> handle, int fd) {
        dlb_tensor *out = nullptr;
        check(dlb_tensor_from_ipc(handle.data(), handle.size(), fd, &out));
        return Tensor(out);
    }

    /// from_ipc() with the bytes and descriptor of `handle`, which keeps its descriptor.
    [[nodiscard]] static Tensor from_ipc(const IpcHandle &handle) {
        return from_ipc(handle.bytes, handle.fd());
    }

  private:
    explicit Tensor(dlb_tensor *t) noexcept : t_(t) {}

    template <class T> void check_element() const {
        const DLDataType have = dtype();
        constexpr DLDataType want = dtype_of<T>();
        if (!same_dtype(have, want)) {
            throw Error(DLB_ERR_INVALID_ARGUMENT, "element type " + dtype_name(want) +
                                                      " does not match the tensor's dtype " +
                                                      dtype_name(have));
        }
    }

    dlb_tensor *t_ = nullptr;
};

} // namespace dlbridge

#endif // DLBRIDGE_HPP
