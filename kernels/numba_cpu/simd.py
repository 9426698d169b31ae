"""A few explicit SIMD vectors for Numba kernels: 16-lane float32 values that live in registers
(zmm with AVX-512, pairs of ymm otherwise) and loads from C-contiguous arrays; the integer
side (int8 x 64, int32 x 16 and VNNI's ``vpdpbusd``) is in simd_int.py.

Why: Numba's auto-vectorizer keeps to 256-bit vectors on these CPUs, widens int8 products to 64
bits unless told otherwise, and never emits ``vpdpbusd``. With LLVM vector types the kernels say what
they mean: ``dpbusd(acc, u8 x 64, s8 x 64)`` adds, per int32 lane, the four products of its bytes.

Portability: the code generated depends on the CPU Numba compiles for (``numba.config.CPU_FEATURES``
or the host's, which is also in Numba's cache key). With AVX512-VNNI ``dpbusd`` is one instruction;
with AVX-VNNI two 256-bit ones; elsewhere the same sums are built from widening multiplies and adds,
so every x86-64 (and any other LLVM target) gets the same integers.

Loads and stores take a flat element offset into a C-contiguous array of any rank (so kernels index
big arrays without making views, which cost reference counting in inner loops) and do no bounds
check: callers keep ``i + lanes <= arr.size``.
"""
from __future__ import annotations

import llvmlite.binding as llb
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba import njit
from numba.extending import intrinsic, models, register_model

I8, I32, F32 = ir.IntType(8), ir.IntType(32), ir.FloatType()
V16F, V16I, V64B = ir.VectorType(F32, 16), ir.VectorType(I32, 16), ir.VectorType(I8, 64)


class Vec(types.Type):
    """A fixed-length LLVM vector held in a register."""

    def __init__(self, elem: types.Type, lanes: int):
        self.elem, self.lanes = elem, lanes
        super().__init__(name=f"vec_{elem}x{lanes}")


@register_model(Vec)
class VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        be = ir.VectorType(dmm.lookup(fe_type.elem).get_value_type(), fe_type.lanes)
        super().__init__(dmm, fe_type, be)


F32x16 = Vec(types.float32, 16)


def cpu_features() -> set[str]:
    """Features of the CPU Numba compiles for, as LLVM names them (e.g. 'avx512vnni')."""
    flat = numba.config.CPU_FEATURES                 # as Numba's codegen: set (even empty) wins over the host
    if flat is None:
        flat = llb.get_host_cpu_features().flatten()
    return {f[1:] for f in flat.split(",") if f.startswith("+")}


def has_vnni512() -> bool:
    f = cpu_features()
    return {"avx512vnni", "avx512bw", "avx512f"} <= f


def has_vnni256() -> bool:
    f = cpu_features()
    return "avxvnni" in f or {"avx512vnni", "avx512vl"} <= f


def _is_1d(arr, dtypes) -> bool:
    """A C-contiguous array of one of dtypes (any ndim: loads take a flat element offset)."""
    return isinstance(arr, types.Array) and arr.layout == "C" and arr.dtype in dtypes


def _require(cond: bool, what: str):
    if not cond:
        raise TypingError(what)


def _elem_ptr(context, builder, aryty, ary, idx):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(data, [idx], inbounds=True)


def _load(builder, ptr, vtype, align):
    return builder.load(builder.bitcast(ptr, vtype.as_pointer()), align=align, typ=vtype)


def _splat(builder, value, vtype):
    undef = ir.Constant(vtype, ir.Undefined)
    v = builder.insert_element(undef, value, ir.Constant(I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(I32, vtype.count), [0] * vtype.count))


def _call(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


# ---- float32 x 16 ----------------------------------------------------------------------------

@intrinsic
def f32x16_load(typingctx, arr, i):
    """arr[i:i+16] of a float32 array."""
    _require(_is_1d(arr, (types.float32,)), "f32x16_load needs a C-contiguous float32 array")

    def codegen(context, builder, sig, args):
        return _load(builder, _elem_ptr(context, builder, sig.args[0], args[0], args[1]), V16F, 4)
    return F32x16(arr, i), codegen


@intrinsic
def f32x16_store(typingctx, arr, i, v):
    """arr[i:i+16] = v for a float32 array."""
    _require(_is_1d(arr, (types.float32,)) and v == F32x16, "f32x16_store needs a C-contiguous float32 array")

    def codegen(context, builder, sig, args):
        ptr = _elem_ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, V16F.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.none(arr, i, v), codegen


@intrinsic
def f32x16_zero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(V16F, None)
    return F32x16(), codegen


@intrinsic
def f32x16_splat(typingctx, s):
    _require(s == types.float32, "f32x16_splat needs a float32")

    def codegen(context, builder, sig, args):
        return _splat(builder, args[0], V16F)
    return F32x16(s), codegen


@intrinsic
def f32x16_fma(typingctx, a, b, c):
    """a * b + c, fused where the CPU can."""
    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.fmuladd.v16f32", V16F, list(args))
    return F32x16(a, b, c), codegen


@intrinsic
def f32x16_mul(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])
    return F32x16(a, b), codegen


@intrinsic
def f32x16_add(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return F32x16(a, b), codegen


@intrinsic
def f32x16_sum(typingctx, v):
    """Sum of the 16 lanes (tree order)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(F32, [F32, V16F]),
                                            "llvm.vector.reduce.fadd.v16f32")
        return builder.call(fn, [ir.Constant(F32, -0.0), args[0]], fastmath=("reassoc",))
    return types.float32(v), codegen


@intrinsic
def f32x16_from_i8(typingctx, arr, i):
    """arr[i:i+16] of an int8 array, as float32 (exact)."""
    _require(_is_1d(arr, (types.int8,)), "f32x16_from_i8 needs a C-contiguous int8 array")

    def codegen(context, builder, sig, args):
        v = _load(builder, _elem_ptr(context, builder, sig.args[0], args[0], args[1]), ir.VectorType(I8, 16), 1)
        return builder.sitofp(v, V16F)
    return F32x16(arr, i), codegen


@intrinsic
def f32x16_from_nibbles(typingctx, arr, i, high):
    """The low (high=False) or high (high=True) nibbles of arr[i:i+16] (uint8), as float32 0..15."""
    _require(_is_1d(arr, (types.uint8,)), "f32x16_from_nibbles needs a C-contiguous uint8 array")
    _require(isinstance(high, types.BooleanLiteral), "f32x16_from_nibbles needs a literal True/False")
    shift = 4 if high.literal_value else 0

    def codegen(context, builder, sig, args):
        v = _load(builder, _elem_ptr(context, builder, sig.args[0], args[0], args[1]), ir.VectorType(I8, 16), 1)
        w = builder.zext(v, V16I)
        w = builder.lshr(w, ir.Constant(V16I, [shift] * 16)) if shift else builder.and_(w, ir.Constant(V16I, [15] * 16))
        return builder.sitofp(w, V16F)
    return F32x16(arr, i, high), codegen


def _exp_ir(builder, x):
    """exp of a float32 x 16 (Cephes expf: range reduction by ln 2, degree-6 polynomial, 2^(n-1) built in
    the exponent bits, then * 2 so n = 128 stays finite): within 2 ulp of expf; NaN stays NaN, x > 88.72
    gives inf, x < -86.6 gives 0 (where expf returns less than 2.5e-38)."""
    def c(v):
        return ir.Constant(V16F, [v] * 16)
    hi, lo = 88.72283905206835, -86.6
    big = builder.fcmp_ordered(">", x, c(hi))
    small = builder.fcmp_ordered("<", x, c(lo))
    xc = builder.select(big, c(hi), builder.select(small, c(lo), x))
    n = _call(builder, "llvm.floor.v16f32", V16F, [builder.fadd(builder.fmul(xc, c(1.44269504088896341)), c(0.5))])
    r = builder.fsub(builder.fsub(xc, builder.fmul(n, c(0.693359375))), builder.fmul(n, c(-2.12194440e-4)))
    p = c(1.9875691500e-4)
    for coef in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = _call(builder, "llvm.fmuladd.v16f32", V16F, [p, r, c(coef)])
    p = _call(builder, "llvm.fmuladd.v16f32", V16F, [p, builder.fmul(r, r), builder.fadd(r, c(1.0))])
    e = builder.shl(builder.add(builder.fptosi(n, V16I), ir.Constant(V16I, [126] * 16)), ir.Constant(V16I, [23] * 16))
    y = builder.fmul(builder.fmul(p, builder.bitcast(e, V16F)), c(2.0))
    return builder.select(big, c(float("inf")), builder.select(small, c(0.0), y))


@intrinsic
def f32x16_exp(typingctx, v):
    """Lane-wise exp (see _exp_ir for accuracy and special values)."""
    _require(v == F32x16, "f32x16_exp takes a float32 x 16")

    def codegen(context, builder, sig, args):
        return _exp_ir(builder, args[0])
    return F32x16(v), codegen


@intrinsic
def f32x16_load_masked(typingctx, arr, i, n, fill):
    """arr[i:i+n] in the first n lanes (n <= 16), ``fill`` in the others; reads only those n elements."""
    _require(_is_1d(arr, (types.float32,)) and fill == types.float32,
             "f32x16_load_masked(float32 array, i, n, float32)")

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_elem_ptr(context, builder, sig.args[0], args[0], args[1]), V16F.as_pointer())
        n32 = context.cast(builder, args[2], sig.args[2], types.int32)
        lanes = ir.Constant(V16I, list(range(16)))
        mask = builder.icmp_signed("<", lanes, _splat(builder, n32, V16I))
        fnty = ir.FunctionType(V16F, [V16F.as_pointer(), I32, ir.VectorType(ir.IntType(1), 16), V16F])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.load.v16f32.p0")
        return builder.call(fn, [ptr, ir.Constant(I32, 4), mask, _splat(builder, args[3], V16F)])
    return F32x16(arr, i, n, fill), codegen


@intrinsic
def f32x16_store_masked(typingctx, arr, i, n, v):
    """arr[i:i+n] = the first n lanes of v (n <= 16); writes only those n elements."""
    _require(_is_1d(arr, (types.float32,)) and v == F32x16, "f32x16_store_masked(float32 array, i, n, f32x16)")

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_elem_ptr(context, builder, sig.args[0], args[0], args[1]), V16F.as_pointer())
        n32 = context.cast(builder, args[2], sig.args[2], types.int32)
        mask = builder.icmp_signed("<", ir.Constant(V16I, list(range(16))), _splat(builder, n32, V16I))
        fnty = ir.FunctionType(ir.VoidType(), [V16F, V16F.as_pointer(), I32, ir.VectorType(ir.IntType(1), 16)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store.v16f32.p0")
        builder.call(fn, [args[3], ptr, ir.Constant(I32, 4), mask])
        return context.get_dummy_value()
    return types.none(arr, i, n, v), codegen


@intrinsic
def f32x16_div(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fdiv(args[0], args[1])
    return F32x16(a, b), codegen


@intrinsic
def f32x16_sub(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fsub(args[0], args[1])
    return F32x16(a, b), codegen


@njit(cache=True)
def exp_sum_inplace(s, n, m):
    """s[:n] = exp(s[:n] - m) (vector exp, 16 at a time); returns their float32 sum."""
    total = f32x16_zero()
    mv = f32x16_splat(m)
    for j in range(0, n, 16):
        k = min(16, n - j)
        e = f32x16_exp(f32x16_sub(f32x16_load_masked(s, j, k, m), mv))      # padding lanes: exp(0) = 1
        f32x16_store_masked(s, j, k, e)
        total = f32x16_add(total, f32x16_load_masked(s, j, k, np.float32(0.0)))
    return f32x16_sum(total)


@intrinsic
def f32x16_max(typingctx, a, b):
    """Lane-wise max, NaN-propagating as numpy's maximum (NaN if either lane is NaN)."""
    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.maximum.v16f32", V16F, list(args))
    return F32x16(a, b), codegen


@intrinsic
def f32x16_hmax(typingctx, v):
    """Max of the 16 lanes, NaN if any lane is NaN."""
    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.vector.reduce.fmaximum.v16f32", F32, [args[0]])
    return types.float32(v), codegen


@njit(cache=True)
def row_max(s, n):
    """max(s[:n]) of a float32 array, n >= 1, NaN if any of them is NaN (as np.max)."""
    mv = f32x16_load_masked(s, 0, min(16, n), s[0])           # padding lanes repeat s[0]
    for j in range(16, n, 16):
        mv = f32x16_max(mv, f32x16_load_masked(s, j, min(16, n - j), s[0]))
    return f32x16_hmax(mv)
