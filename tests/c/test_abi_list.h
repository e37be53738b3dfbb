/* The layout facts compared between our DLPack declarations and the official header.
 * Included (after exactly one of the two headers) by test_abi_ours.c and test_abi_official.c;
 * defines a static table ABI_TABLE. The _Static_asserts pin the numbers of the DLPack 1.3 ABI on
 * x86-64 LP64 (as the DLPack 1.3 header lays the structs out), so a mismatch already fails the
 * build of either file; the runtime comparison in test_abi.c then also catches drift on other
 * targets. */
#ifndef DLB_TEST_ABI_LIST_H
#define DLB_TEST_ABI_LIST_H

#include <stddef.h>
#include <stdint.h>

#include "test_abi.h"

#define MEMBER_SIZE(T, f) sizeof(((T *)0)->f)

/* size, alignment, and offset and size of every field */
#define ABI_LAYOUT(X)                                                                  \
    X(sizeof(DLPackVersion)) X(_Alignof(DLPackVersion))                                \
    X(offsetof(DLPackVersion, major)) X(MEMBER_SIZE(DLPackVersion, major))             \
    X(offsetof(DLPackVersion, minor)) X(MEMBER_SIZE(DLPackVersion, minor))             \
    X(sizeof(DLDeviceType))                                                            \
    X(sizeof(DLDevice)) X(_Alignof(DLDevice))                                          \
    X(offsetof(DLDevice, device_type)) X(MEMBER_SIZE(DLDevice, device_type))           \
    X(offsetof(DLDevice, device_id)) X(MEMBER_SIZE(DLDevice, device_id))               \
    X(sizeof(DLDataType)) X(_Alignof(DLDataType))                                      \
    X(offsetof(DLDataType, code)) X(MEMBER_SIZE(DLDataType, code))                     \
    X(offsetof(DLDataType, bits)) X(MEMBER_SIZE(DLDataType, bits))                     \
    X(offsetof(DLDataType, lanes)) X(MEMBER_SIZE(DLDataType, lanes))                   \
    X(sizeof(DLTensor)) X(_Alignof(DLTensor))                                          \
    X(offsetof(DLTensor, data)) X(MEMBER_SIZE(DLTensor, data))                         \
    X(offsetof(DLTensor, device)) X(MEMBER_SIZE(DLTensor, device))                     \
    X(offsetof(DLTensor, ndim)) X(MEMBER_SIZE(DLTensor, ndim))                         \
    X(offsetof(DLTensor, dtype)) X(MEMBER_SIZE(DLTensor, dtype))                       \
    X(offsetof(DLTensor, shape)) X(MEMBER_SIZE(DLTensor, shape))                       \
    X(offsetof(DLTensor, strides)) X(MEMBER_SIZE(DLTensor, strides))                   \
    X(offsetof(DLTensor, byte_offset)) X(MEMBER_SIZE(DLTensor, byte_offset))           \
    X(sizeof(DLManagedTensor)) X(_Alignof(DLManagedTensor))                            \
    X(offsetof(DLManagedTensor, dl_tensor)) X(MEMBER_SIZE(DLManagedTensor, dl_tensor)) \
    X(offsetof(DLManagedTensor, manager_ctx))                                          \
    X(MEMBER_SIZE(DLManagedTensor, manager_ctx))                                       \
    X(offsetof(DLManagedTensor, deleter)) X(MEMBER_SIZE(DLManagedTensor, deleter))     \
    X(sizeof(DLManagedTensorVersioned)) X(_Alignof(DLManagedTensorVersioned))          \
    X(offsetof(DLManagedTensorVersioned, version))                                     \
    X(MEMBER_SIZE(DLManagedTensorVersioned, version))                                  \
    X(offsetof(DLManagedTensorVersioned, manager_ctx))                                 \
    X(MEMBER_SIZE(DLManagedTensorVersioned, manager_ctx))                              \
    X(offsetof(DLManagedTensorVersioned, deleter))                                     \
    X(MEMBER_SIZE(DLManagedTensorVersioned, deleter))                                  \
    X(offsetof(DLManagedTensorVersioned, flags))                                       \
    X(MEMBER_SIZE(DLManagedTensorVersioned, flags))                                    \
    X(offsetof(DLManagedTensorVersioned, dl_tensor))                                   \
    X(MEMBER_SIZE(DLManagedTensorVersioned, dl_tensor))

/* every enumerator and macro value of DLPack 1.3 */
#define ABI_VALUES(X)                                                                  \
    X(kDLCPU) X(kDLCUDA) X(kDLCUDAHost) X(kDLOpenCL) X(kDLVulkan) X(kDLMetal) X(kDLVPI)  \
    X(kDLROCM) X(kDLROCMHost) X(kDLExtDev) X(kDLCUDAManaged) X(kDLOneAPI) X(kDLWebGPU)   \
    X(kDLHexagon) X(kDLMAIA) X(kDLTrn)                                                 \
    X(kDLInt) X(kDLUInt) X(kDLFloat) X(kDLOpaqueHandle) X(kDLBfloat) X(kDLComplex)      \
    X(kDLBool) X(kDLFloat8_e3m4) X(kDLFloat8_e4m3) X(kDLFloat8_e4m3b11fnuz)            \
    X(kDLFloat8_e4m3fn) X(kDLFloat8_e4m3fnuz) X(kDLFloat8_e5m2) X(kDLFloat8_e5m2fnuz)   \
    X(kDLFloat8_e8m0fnu) X(kDLFloat6_e2m3fn) X(kDLFloat6_e3m2fn) X(kDLFloat4_e2m1fn)    \
    X(DLPACK_MAJOR_VERSION) X(DLPACK_MINOR_VERSION)                                    \
    X(DLPACK_FLAG_BITMASK_READ_ONLY) X(DLPACK_FLAG_BITMASK_IS_COPIED)                  \
    X(DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED)

#define ABI_ENTRY(e) {#e, (unsigned long long)(e)},

static const abi_entry ABI_TABLE[] = {ABI_LAYOUT(ABI_ENTRY) ABI_VALUES(ABI_ENTRY)};

/* The DLPack 1.3 layout on x86-64 LP64. */
#if defined(__x86_64__) && defined(__LP64__)
_Static_assert(sizeof(DLPackVersion) == 8 && _Alignof(DLPackVersion) == 4, "DLPackVersion");
_Static_assert(sizeof(DLDevice) == 8 && _Alignof(DLDevice) == 4, "DLDevice");
_Static_assert(sizeof(DLDeviceType) == 4, "DLDeviceType is a 4-byte enum");
_Static_assert(sizeof(DLDataType) == 4 && _Alignof(DLDataType) == 2, "DLDataType");
_Static_assert(sizeof(DLTensor) == 48 && _Alignof(DLTensor) == 8, "DLTensor");
_Static_assert(offsetof(DLTensor, data) == 0 && offsetof(DLTensor, device) == 8 &&
                   offsetof(DLTensor, ndim) == 16 && offsetof(DLTensor, dtype) == 20 &&
                   offsetof(DLTensor, shape) == 24 && offsetof(DLTensor, strides) == 32 &&
                   offsetof(DLTensor, byte_offset) == 40,
               "DLTensor field offsets");
_Static_assert(sizeof(DLManagedTensor) == 64 && _Alignof(DLManagedTensor) == 8 &&
                   offsetof(DLManagedTensor, dl_tensor) == 0 &&
                   offsetof(DLManagedTensor, manager_ctx) == 48 &&
                   offsetof(DLManagedTensor, deleter) == 56,
               "DLManagedTensor");
_Static_assert(sizeof(DLManagedTensorVersioned) == 80 && _Alignof(DLManagedTensorVersioned) == 8 &&
                   offsetof(DLManagedTensorVersioned, version) == 0 &&
                   offsetof(DLManagedTensorVersioned, manager_ctx) == 8 &&
                   offsetof(DLManagedTensorVersioned, deleter) == 16 &&
                   offsetof(DLManagedTensorVersioned, flags) == 24 &&
                   offsetof(DLManagedTensorVersioned, dl_tensor) == 32,
               "DLManagedTensorVersioned");
#endif

/* Field types, not just sizes: signedness matters to every C caller (a uint64_t byte_offset
 * declared as int64_t would compile and silently change comparisons). */
#define HAS_TYPE(T, f, type) _Generic(((T *)0)->f, type: 1, default: 0)
_Static_assert(HAS_TYPE(DLPackVersion, major, uint32_t), "DLPackVersion.major");
_Static_assert(HAS_TYPE(DLPackVersion, minor, uint32_t), "DLPackVersion.minor");
_Static_assert(HAS_TYPE(DLDevice, device_type, DLDeviceType), "DLDevice.device_type");
_Static_assert(HAS_TYPE(DLDevice, device_id, int32_t), "DLDevice.device_id");
_Static_assert(HAS_TYPE(DLDataType, code, uint8_t), "DLDataType.code");
_Static_assert(HAS_TYPE(DLDataType, bits, uint8_t), "DLDataType.bits");
_Static_assert(HAS_TYPE(DLDataType, lanes, uint16_t), "DLDataType.lanes");
_Static_assert(HAS_TYPE(DLTensor, data, void *), "DLTensor.data");
_Static_assert(HAS_TYPE(DLTensor, device, DLDevice), "DLTensor.device");
_Static_assert(HAS_TYPE(DLTensor, ndim, int32_t), "DLTensor.ndim");
_Static_assert(HAS_TYPE(DLTensor, dtype, DLDataType), "DLTensor.dtype");
_Static_assert(HAS_TYPE(DLTensor, shape, int64_t *), "DLTensor.shape");
_Static_assert(HAS_TYPE(DLTensor, strides, int64_t *), "DLTensor.strides");
_Static_assert(HAS_TYPE(DLTensor, byte_offset, uint64_t), "DLTensor.byte_offset");
_Static_assert(HAS_TYPE(DLManagedTensor, dl_tensor, DLTensor), "DLManagedTensor.dl_tensor");
_Static_assert(HAS_TYPE(DLManagedTensor, manager_ctx, void *), "DLManagedTensor.manager_ctx");
_Static_assert(HAS_TYPE(DLManagedTensor, deleter, void (*)(struct DLManagedTensor *)),
               "DLManagedTensor.deleter takes struct DLManagedTensor *");
_Static_assert(HAS_TYPE(DLManagedTensorVersioned, version, DLPackVersion),
               "DLManagedTensorVersioned.version");
_Static_assert(HAS_TYPE(DLManagedTensorVersioned, manager_ctx, void *),
               "DLManagedTensorVersioned.manager_ctx");
_Static_assert(HAS_TYPE(DLManagedTensorVersioned, deleter,
                        void (*)(struct DLManagedTensorVersioned *)),
               "DLManagedTensorVersioned.deleter takes struct DLManagedTensorVersioned *");
_Static_assert(HAS_TYPE(DLManagedTensorVersioned, flags, uint64_t),
               "DLManagedTensorVersioned.flags");
_Static_assert(HAS_TYPE(DLManagedTensorVersioned, dl_tensor, DLTensor),
               "DLManagedTensorVersioned.dl_tensor");

/* The type name DLDataTypeCode exists (programs spell it), and its enumerators fit a uint8_t
 * code field. */
static const DLDataTypeCode abi_code_name_exists = kDLFloat;
_Static_assert(kDLFloat4_e2m1fn <= UINT8_MAX, "type codes fit DLDataType.code");

#endif /* DLB_TEST_ABI_LIST_H */
