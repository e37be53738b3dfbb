#!/usr/bin/env python3
"""Writes the hand-made seed corpus, fuzz/corpus/<target>/<name>, one small file per case.

Each seed is encoded the way the target's decoder (fuzz_targets/*.rs) reads its input, so that
the fuzzer starts from inputs that reach the interesting paths: successful imports that are
read back, every refusal class, views in and out of bounds, casts, device requests, read-only
exports. Run from anywhere: python3 fuzz/make_seeds.py (it replaces the seed files it names and
leaves other files alone).
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# Cursor::dim: tags 0..=159 are tag % 16 - 4; 160.. pick EDGES; 224.. take 8 raw bytes.
EDGES = [-1, -(1 << 63), (1 << 63) - 1, 1 << 62, 1 << 32, (1 << 31) - 1, -(1 << 40), 1 << 20,
         65536, -65536, (1 << 62), -(1 << 63) + 1, -2, 100, 4096, 1 << 48]


def dim(v):
    if -4 <= v <= 11:
        return bytes([v + 4])
    if v in EDGES[1:]:
        return bytes([160 + EDGES.index(v, 1)])
    return bytes([224]) + struct.pack("<q", v)


def dims(vs):
    return b"".join(dim(v) for v in vs)


def u8(v):
    return bytes([v & 0xFF])


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v):
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


# Index into common::DTYPES.
DT = {"bool": 0, "i8": 1, "i16": 2, "i32": 3, "i64": 4, "u8": 5, "u16": 6, "u32": 7, "u64": 8,
      "f16": 9, "bf16": 10, "f32": 11, "f64": 12, "c64": 13, "c128": 14, "f8": 15, "f32x4": 16,
      "i16x3": 17}


# ---- import ------------------------------------------------------------------------------------

def imp(versioned=True, out_null=False, major=1, minor=3, flags=0, ndim=None, shape=(), strides=None,
        shape_null=False, strides_null=False, buf_len=4096, byte_offset=0, dtype="f32", raw_dtype=None,
        device=None, data_off=0, seed=7, ops=0x7F, view=None, change=None, rot=0):
    b = u8((1 if versioned else 0) | (0x0E if out_null else 0))
    b += u8({1: 0, 0: 240, 2: 248}.get(major, 255)) + (u32(major) if major not in (0, 1, 2) else b"")
    b += u8(minor) if minor < 6 else u8(255) + u32(minor)
    b += u8(flags) if flags < 8 else u8(255) + u64(flags)
    nd = len(shape) if ndim is None else ndim
    special = [-1, 65, 200, 64, -(1 << 31), (1 << 31) - 1, 63, -64]
    b += u8(nd) if 0 <= nd <= 9 else u8(200 + special.index(nd))
    b += u8((0x0F if shape_null else 0) | (0xF0 if strides_null else 0))
    b += u16(buf_len)
    n_alloc = max(0, min(nd, 64))
    shape = list(shape) + [1] * (n_alloc - len(shape))
    strides = list(strides if strides is not None else [1] * n_alloc) + [1] * n_alloc
    b += dims(shape[:n_alloc]) + dims(strides[:n_alloc])
    if byte_offset == 0:
        b += u8(0)
    elif byte_offset < 65536:
        b += u8(128) + u16(byte_offset)
    else:
        b += u8(255) + u64(byte_offset)
    b += (u8(200) + bytes(raw_dtype[:2]) + u16(raw_dtype[2])) if raw_dtype else u8(0) + u8(DT[dtype])
    if device is None:
        b += u8(0)
    else:
        b += u8(201) + u32(device[0]) + u8(255) + u32(device[1])
    b += u8(0) if data_off is None else u8(16) + u16(data_off)
    b += u8(seed) + u8(ops)
    if ops & 2:
        vshape, vstrides, voff = view or ((), (), 0)
        b += u8(len(vshape)) + dims(vshape) + dims(vstrides) + dim(voff)
    if ops & 4 and ops & 8:
        # The versioned export is re-imported: unchanged, or after one field was changed.
        # change = ("shape" | "stride", axis, value), ("byte_offset", n) or ("data", shift).
        if change is None:
            b += u8(0)
        elif change[0] in ("shape", "stride"):
            b += u8(1 | (0 if change[0] == "shape" else 1) << 1) + u8(change[1]) + dim(change[2])
        else:
            b += u8(1 | (2 if change[0] == "byte_offset" else 3) << 1) + u8(change[1] & 0xFF)
    return b + u8(rot)


IMPORT = {
    "f32_2x3_all_ops": imp(shape=(2, 3), strides=(3, 1), ops=0x7F, view=((3, 2), (1, 3), 0)),
    "legacy_i16_transposed": imp(versioned=False, shape=(3, 2), strides=(1, 3), dtype="i16", ops=0x3F),
    "readonly_negative_strides": imp(flags=1, shape=(4, 5), strides=(-5, -1), byte_offset=19 * 4,
                                     ops=0x7F, view=((2,), (-1,), 0)),
    "legacy_null_strides_rowmajor": imp(versioned=False, shape=(2, 2, 3), strides_null=True, dtype="f64",
                                        ops=0x7F, rot=2),
    "v12_null_strides_refused": imp(minor=2, shape=(6,), strides_null=True),
    "major2_version_error": imp(major=2, shape=(2,)),
    "ndim65_refused": imp(ndim=65, shape=[2] * 65),
    "shape_null_refused": imp(shape=(3,), shape_null=True),
    "huge_extent_overflow": imp(shape=((1 << 63) - 1, 4), strides=(4, 1)),
    "opaque_unsupported": imp(shape=(2,), raw_dtype=(3, 64, 1)),
    "float32x4_vector": imp(shape=(3,), raw_dtype=(2, 32, 4), ops=0x5F),
    "cuda_device_held_not_read": imp(shape=(4,), device=(2, 0), ops=0x7F),
    "v11_null_strides_ok": imp(minor=1, shape=(6,), strides_null=True, dtype="c64"),
    "out_null_consumed": imp(out_null=True, shape=(2, 2)),
    "null_managed_tensor": b"\xff",
    "outside_buffer_not_read": imp(shape=(1000,), strides=(100,), buf_len=64, ops=0x5F),
    "zero_elements_null_data": imp(shape=(0, 5), data_off=None, ops=0x7F, view=((0,), (1,), 0)),
    "null_data_with_elements": imp(shape=(2,), data_off=None),
    "byte_offset_overflow": imp(shape=(2,), byte_offset=(1 << 64) - 8),
    "broadcast_zero_strides": imp(shape=(50, 50), strides=(0, 1), buf_len=200, ops=0x7F,
                                  view=((100,), (0,), 3)),
    "reimport_changed_shape_inside": imp(shape=(4, 5), strides=(5, 1), ops=0x0D, change=("shape", 0, 2)),
    "reimport_changed_stride_outside": imp(shape=(4, 5), strides=(5, 1), ops=0x0D, change=("stride", 1, 7)),
    "reimport_changed_to_no_elements": imp(shape=(4, 5), strides=(5, 1), ops=0x0D, change=("shape", 1, 0)),
    "reimport_changed_byte_offset": imp(shape=(8,), dtype="u8", ops=0x0D, change=("byte_offset", 3)),
    "reimport_changed_data_pointer": imp(shape=(3, 3), strides=(-3, 1), byte_offset=6 * 4, ops=0x0D,
                                         change=("data", -4)),
}


# ---- views -------------------------------------------------------------------------------------

def views(dtype, n, seed=3, shape2=None, ops=b""):
    b = u8(DT[dtype]) + u16(n)
    b += u8(1) + u8(shape2 - 1) if shape2 else u8(0)
    return b + u8(seed) + ops


def v_view(which, shape, strides=None, offset=0, ndim=None):
    nd = len(shape) if ndim is None else ndim
    special = [-1, 65, 9, 64, -(1 << 31), 100, 63, 0]
    b = u8(0) + u8(which) + (u8(nd) if 0 <= nd <= 8 else u8(248 + special.index(nd)))
    alloc = max(0, min(nd, 64))
    shape = list(shape) + [1] * (alloc - len(shape))
    b += dims(shape[:alloc])
    if strides is None:
        b += u8(0)
    else:
        b += u8(200) + dims(list(strides) + [1] * (alloc - len(strides)))
    return b + dim(offset)


def v_copy(which):
    return u8(3) + u8(which)


def v_move(which, cuda_too=False):
    return u8(4 | (0x80 if cuda_too else 0)) + u8(which)


def v_cast(which, to):
    return u8(5) + u8(which) + u8(DT[to])


def v_alias(which):
    return u8(6) + u8(which)


def v_write(which):
    return u8(7 | 0x40) + u8(which)


def v_free(which):
    return u8(7) + u8(which)


VIEWS = {
    "f32_transpose_cast": views("f32", 24, shape2=4, ops=v_view(0, (6, 4), (1, 6)) + v_copy(1)
                                + v_cast(1, "f64") + v_cast(1, "bool") + v_cast(1, "f16")),
    "i32_reverse_widen": views("i32", 10, ops=v_view(0, (10,), (-1,), 9) + v_cast(1, "i64")
                               + v_cast(1, "i8") + v_view(1, (11,), (-1,), 9)),
    "out_of_bounds_refused": views("i16", 8, ops=v_view(0, (2, 2), None, 5) + v_view(0, (2,), (-1,), 0)
                                   + v_view(0, (0,), None, 9) + v_view(0, (0,), None, 8)),
    "broadcast_zero_strides": views("u8", 16, ops=v_view(0, (1000, 1000), (0, 0), 3)
                                    + v_view(1, (4, 4), (1, 0), 0) + v_copy(2)),
    "overflow_refused": views("f64", 4, ops=v_view(0, ((1 << 63) - 1, 2), (1, 1))
                              + v_view(0, (2, 2), ((1 << 63) - 1, 1)) + v_view(0, (-1,), (1,))),
    "complex_casts": views("c64", 12, ops=v_cast(0, "f32") + v_cast(0, "bool") + v_cast(0, "c128")
                           + v_view(0, (3, 2), (2, 6), 1) + v_cast(4, "bool")),
    "half_to_float": views("f16", 64, ops=v_cast(0, "f32") + v_view(0, (8, 4), (8, 2), 1)
                           + v_cast(2, "f32")),
    "bf16_to_float": views("bf16", 64, seed=200, ops=v_cast(0, "f32") + v_cast(0, "bool")),
    "alias_write_free": views("i64", 12, shape2=3, ops=v_alias(0) + v_view(1, (2, 2), (4, 1), 5)
                              + v_write(2) + v_copy(2) + v_free(0) + v_move(1, True) + v_copy(0)),
    "view_of_view_storage_bound": views("u16", 6, ops=v_view(0, (2,), None, 4) + v_view(1, (6,), None, -4)
                                        + v_view(1, (0,), None, 2) + v_view(1, (0,), None, 3)),
    "empty_base": views("f32", 0, ops=v_view(0, (0, 3), None, 0) + v_view(0, (1,), None, 0)
                        + v_copy(0) + v_cast(0, "i8")),
    "bad_ndim_and_vectors": views("f32x4", 5, ops=v_view(0, (), None, 0, ndim=65)
                                  + v_view(0, (), None, 0, ndim=-1) + v_view(0, (5,), (-1,), 4)
                                  + v_cast(0, "f32") + v_copy(1)),
    "eight_dims": views("u8", 256, ops=v_view(0, (2,) * 8, (128, 64, 32, 16, 8, 4, 2, 1))
                        + v_view(1, (2,) * 8, (-128, 64, -32, 16, -8, 4, -2, 1), 255)
                        + v_cast(2, "u16") + v_copy(2)),
}


# ---- export ------------------------------------------------------------------------------------

def exp(dtype="f32", shape=(2, 3), seed=9, kind=0, view=None, versioned=True, copy=False,
        deleter=False, device=None, write=True, rot=0):
    b = u8(DT[dtype]) + u8(len(shape)) + bytes(shape) + u8(seed) + u8(kind)
    if view is not None and shape:
        vshape, vstrides, off = view
        b += u8(1)
        for e, v in zip(shape, vshape):
            b += u8(1) if v == e else u8(0) + u8(v)
        b += bytes(s + 4 for s in vstrides) + u8(off)
    else:
        b += u8(0)
    b += u8((1 if versioned else 0) | (2 if copy else 0) | (4 if deleter else 0))
    if device is None:
        b += u8(0)
    else:
        b += u8(161) + u32(device[0]) + u8(255) + u32(device[1])
    if write:
        b += u8(1)
    return b + u8(rot)


EXPORT = {
    "own_versioned_shared_reimport": exp(),
    "own_versioned_copy_deleter": exp(copy=True, deleter=True),
    "readonly_versioned_shared": exp(kind=1),
    "readonly_versioned_copy": exp(kind=1, copy=True),
    "readonly_legacy_refused": exp(kind=1, versioned=False),
    "readonly_legacy_copy": exp(kind=1, versioned=False, copy=True),
    "import_writable_negative_view": exp(kind=2, shape=(3, 4), view=((3, 4), (-4, -1), 11)),
    "legacy_import_transposed_legacy_export": exp(kind=3, shape=(3, 3), view=((3, 3), (1, 3), 0),
                                                  versioned=False, rot=1),
    "zero_stride_view_copy": exp(dtype="c128", shape=(2, 2), view=((3, 2), (0, 1), 0), copy=True),
    "cuda_device_error": exp(device=(2, 0)),
    "cuda_host_device_error": exp(device=(3, 0), kind=1),
    "vulkan_unsupported": exp(device=(7, 0)),
    "unknown_device_type": exp(device=(5, 0)),
    "negative_cpu_id": exp(device=(1, -1)),
    "cpu2_move_then_export": exp(device=(1, 2), kind=1, versioned=False),
    "zero_elements": exp(shape=(0, 3), kind=1),
    "scalar_bool": exp(dtype="bool", shape=(), versioned=False, copy=True),
}


def main():
    for target, seeds in (("import", IMPORT), ("views", VIEWS), ("export", EXPORT)):
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds in {os.path.relpath(d)}")


if __name__ == "__main__":
    main()
