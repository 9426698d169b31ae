"""Integer SIMD for the quantized kernels: int32 x 16 and int8 x 64 vectors, the VNNI dot-product
step ``dpbusd``, and the reductions and scale layouts that turn its lanes into exact per-group sums.

``reduce4(d0, d1, d2, d3, n_parts)`` folds four int32 x 16 accumulators (four weight rows) so that
lane r * n_parts + p holds the exact sum of part p (of n_parts equal parts) of row r's lanes; the
lanes past 4 * n_parts are 0. With one quantization group per part, each lane is one row's integer
group dot, converted to float once and scaled by the matching lane of ``gather4`` (weight scales of
the four rows) times ``rep4`` (the token's scales): the reference's integer math, 4 rows at once.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import (F32, F32x16, I8, I32, V16F, V16I, V64B, Vec, _call, _elem_ptr, _is_1d, _load, _require,
                   _splat, has_vnni256, has_vnni512)

I32x16 = Vec(types.int32, 16)
I8x64 = Vec(types.int8, 64)


# ---- int32 x 16 and int8 x 64 ---------------------------------------------------------------

@intrinsic
def i32x16_zero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(V16I, None)
    return I32x16(), codegen


@intrinsic
def i32x16_load(typingctx, arr, i):
    _require(_is_1d(arr, (types.int32,)), "i32x16_load needs a C-contiguous int32 array")

    def codegen(context, builder, sig, args):
        return _load(builder, _elem_ptr(context, builder, sig.args[0], args[0], args[1]), V16I, 4)
    return I32x16(arr, i), codegen


@intrinsic
def i32x16_add(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])
    return I32x16(a, b), codegen


@intrinsic
def i32x16_sub(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.sub(args[0], args[1])
    return I32x16(a, b), codegen


@intrinsic
def i32x16_mul(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.mul(args[0], args[1])
    return I32x16(a, b), codegen


@intrinsic
def i32x16_splat(typingctx, s):
    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.int32)
        return _splat(builder, v, V16I)
    return I32x16(s), codegen


@intrinsic
def i32x16_to_f32(typingctx, v):
    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], V16F)
    return F32x16(v), codegen


@intrinsic
def i32x16_sum(typingctx, v):
    def codegen(context, builder, sig, args):
        return _call(builder, "llvm.vector.reduce.add.v16i32", I32, [args[0]])
    return types.int32(v), codegen


@intrinsic
def i8x64_load(typingctx, arr, i):
    """arr[i:i+64] of an int8 or uint8 array (the bytes; signedness is the consumer's)."""
    _require(_is_1d(arr, (types.int8, types.uint8)), "i8x64_load needs a C-contiguous int8/uint8 array")

    def codegen(context, builder, sig, args):
        return _load(builder, _elem_ptr(context, builder, sig.args[0], args[0], args[1]), V64B, 1)
    return I8x64(arr, i), codegen


@intrinsic
def i8x64_load_masked(typingctx, arr, i, n):
    """arr[i:i+n] (n <= 64 bytes) in the first n lanes, zero in the others; reads only those n bytes."""
    _require(_is_1d(arr, (types.int8, types.uint8)), "i8x64_load_masked needs a C-contiguous int8/uint8 array")

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_elem_ptr(context, builder, sig.args[0], args[0], args[1]), V64B.as_pointer())
        n32 = context.cast(builder, args[2], sig.args[2], types.int32)
        V64I = ir.VectorType(I32, 64)
        mask = builder.icmp_signed("<", ir.Constant(V64I, list(range(64))), _splat(builder, n32, V64I))
        fnty = ir.FunctionType(V64B, [V64B.as_pointer(), I32, ir.VectorType(ir.IntType(1), 64), V64B])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.load.v64i8.p0")
        return builder.call(fn, [ptr, ir.Constant(I32, 1), mask, ir.Constant(V64B, None)])
    return I8x64(arr, i, n), codegen


@intrinsic
def i32x16_lane(typingctx, v, i):
    """Lane i of an int32 x 16."""
    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], context.cast(builder, args[1], sig.args[1], types.int32))
    return types.int32(v, i), codegen


@intrinsic
def i8x64_flip_sign(typingctx, v):
    """v xor 0x80: an int8 q as the uint8 q + 128."""
    def codegen(context, builder, sig, args):
        return builder.xor(args[0], ir.Constant(V64B, [0x80] * 64))
    return I8x64(v), codegen


@intrinsic
def i8x64_nibbles(typingctx, arr, i, high):
    """The low or high nibbles (a literal flag) of arr[i:i+64] (uint8), as 64 bytes 0..15."""
    _require(_is_1d(arr, (types.uint8,)), "i8x64_nibbles needs a C-contiguous uint8 array")
    _require(isinstance(high, types.BooleanLiteral), "i8x64_nibbles needs a literal True/False")
    hi = high.literal_value

    def codegen(context, builder, sig, args):
        v = _load(builder, _elem_ptr(context, builder, sig.args[0], args[0], args[1]), V64B, 1)
        return builder.lshr(v, ir.Constant(V64B, [4] * 64)) if hi else builder.and_(v, ir.Constant(V64B, [15] * 64))
    return I8x64(arr, i, high), codegen


@intrinsic
def i8x64_nib(typingctx, v, high):
    """The low or high nibbles (a literal flag) of 64 bytes, as bytes 0..15."""
    _require(v == I8x64 and isinstance(high, types.BooleanLiteral), "i8x64_nib(i8x64, literal bool)")
    hi = high.literal_value

    def codegen(context, builder, sig, args):
        return builder.lshr(args[0], ir.Constant(V64B, [4] * 64)) if hi else \
            builder.and_(args[0], ir.Constant(V64B, [15] * 64))
    return I8x64(v, high), codegen


def _dpbusd_generic(builder, acc, a, b):
    """acc + per lane l, sum_{j<4} u8(a[4l+j]) * s8(b[4l+j]), from widening multiplies."""
    V64I = ir.VectorType(I32, 64)
    prod = builder.mul(builder.zext(a, V64I), builder.sext(b, V64I))
    out = acc
    for j in range(4):
        part = builder.shuffle_vector(prod, ir.Constant(V64I, ir.Undefined),
                                      ir.Constant(ir.VectorType(I32, 16), [4 * lane + j for lane in range(16)]))
        out = builder.add(out, part)
    return out


def _halves(builder, v, vtype_half):
    lo = builder.shuffle_vector(v, ir.Constant(v.type, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, vtype_half.count), list(range(vtype_half.count))))
    hi = builder.shuffle_vector(v, ir.Constant(v.type, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, vtype_half.count),
                                            list(range(vtype_half.count, 2 * vtype_half.count))))
    return lo, hi


@intrinsic
def dpbusd(typingctx, acc, a, b):
    """acc (i32 x 16) + per lane the sum of 4 products u8(a) * s8(b): vpdpbusd (exact, no saturation)."""
    _require(acc == I32x16 and a == I8x64 and b == I8x64, "dpbusd(i32x16, i8x64 unsigned, i8x64 signed)")
    mode = "512" if has_vnni512() else "256" if has_vnni256() else "generic"

    def codegen(context, builder, sig, args):
        acc_v, a_v, b_v = args
        if mode == "512":
            return _call(builder, "llvm.x86.avx512.vpdpbusd.512", V16I,
                         [acc_v, builder.bitcast(a_v, V16I), builder.bitcast(b_v, V16I)])
        if mode == "256":
            V8I = ir.VectorType(I32, 8)
            acc_lo, acc_hi = _halves(builder, acc_v, V8I)
            a_lo, a_hi = _halves(builder, builder.bitcast(a_v, V16I), V8I)
            b_lo, b_hi = _halves(builder, builder.bitcast(b_v, V16I), V8I)
            lo = _call(builder, "llvm.x86.avx512.vpdpbusd.256", V8I, [acc_lo, a_lo, b_lo])
            hi = _call(builder, "llvm.x86.avx512.vpdpbusd.256", V8I, [acc_hi, a_hi, b_hi])
            return builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(I32, 16), list(range(16))))
        return _dpbusd_generic(builder, acc_v, a_v, b_v)
    return I32x16(acc, a, b), codegen


@intrinsic
def dpbusd_portable(typingctx, acc, a, b):
    """dpbusd without VNNI (what a CPU without it runs), for tests on any machine."""
    def codegen(context, builder, sig, args):
        return _dpbusd_generic(builder, *args)
    return I32x16(acc, a, b), codegen


def _n_parts(n_parts) -> int:
    _require(isinstance(n_parts, types.IntegerLiteral) and n_parts.literal_value in (1, 2, 4),
             "n_parts must be a literal 1, 2 or 4")
    return n_parts.literal_value


def _pair_add(builder, a, b, lanes_out):
    """shuffle(a, b) even lanes + odd lanes: adjacent pairs of the concatenation a ++ b summed."""
    even = ir.Constant(ir.VectorType(I32, lanes_out), list(range(0, 2 * lanes_out, 2)))
    odd = ir.Constant(ir.VectorType(I32, lanes_out), list(range(1, 2 * lanes_out, 2)))
    return builder.add(builder.shuffle_vector(a, b, even), builder.shuffle_vector(a, b, odd))


def _widen16(builder, v):
    """A vector of 4 or 8 int32/float lanes padded with zeros to 16 lanes."""
    n = v.type.count
    if n == 16:
        return v
    zero = ir.Constant(v.type, None)
    mask = list(range(n)) + [n] * (16 - n)
    return builder.shuffle_vector(v, zero, ir.Constant(ir.VectorType(I32, 16), mask))


@intrinsic
def reduce4(typingctx, d0, d1, d2, d3, n_parts):
    """int32 x 16: lane r * n_parts + p = sum of part p of d_r's 16 lanes (exact); other lanes 0."""
    _require(all(d == I32x16 for d in (d0, d1, d2, d3)), "reduce4 takes four int32 x 16")
    n = _n_parts(n_parts)

    def codegen(context, builder, sig, args):
        a0, a1, a2, a3 = args[:4]
        v = _pair_add(builder, _pair_add(builder, a0, a1, 16), _pair_add(builder, a2, a3, 16), 16)   # 4 per row
        if n <= 2:
            v = _pair_add(builder, v, ir.Constant(V16I, ir.Undefined), 8)                          # 2 per row
        if n == 1:
            v = _pair_add(builder, v, ir.Constant(ir.VectorType(I32, 8), ir.Undefined), 4)         # 1 per row
        return _widen16(builder, v)
    return I32x16(d0, d1, d2, d3, n_parts), codegen


def _gather(builder, context, sig, args, elem_ty, n, rep):
    """[a_r[i_r + p] for r in 0..3 for p < n] (+ zero lanes); rep: one array for all four rows."""
    lanes = []
    for r in range(4):
        aty, arr, idx = (sig.args[0], args[0], args[1]) if rep else (sig.args[2 * r], args[2 * r], args[2 * r + 1])
        ptr = _elem_ptr(context, builder, aty, arr, idx)
        small = _load(builder, ptr, ir.VectorType(elem_ty, n), 1) if n > 1 else \
            builder.insert_element(ir.Constant(ir.VectorType(elem_ty, 1), None), builder.load(ptr, typ=elem_ty),
                                   ir.Constant(I32, 0))
        lanes.append(small)
    v01 = builder.shuffle_vector(lanes[0], lanes[1], ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n))))
    v23 = builder.shuffle_vector(lanes[2], lanes[3], ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n))))
    v = builder.shuffle_vector(v01, v23, ir.Constant(ir.VectorType(I32, 4 * n), list(range(4 * n))))
    return v


def _gather_type(arrs, elem_types, what):
    for a in arrs:
        _require(_is_1d(a, elem_types), f"{what} takes C-contiguous arrays of {elem_types}")


@intrinsic
def gather4(typingctx, a0, i0, a1, i1, a2, i2, a3, i3, n_parts):
    """float32 x 16 in reduce4's layout: lane r * n + p = a_r[i_r + p] (a_r float32 rows); others 0."""
    _gather_type((a0, a1, a2, a3), (types.float32,), "gather4")
    n = _n_parts(n_parts)

    def codegen(context, builder, sig, args):
        return _widen16(builder, _gather(builder, context, sig, args, F32, n, rep=False))
    return F32x16(a0, i0, a1, i1, a2, i2, a3, i3, n_parts), codegen


@intrinsic
def rep4(typingctx, a, i, n_parts):
    """float32 x 16 in reduce4's layout with the same a[i + p] for all four rows (the token's scales)."""
    _gather_type((a,), (types.float32,), "rep4")
    n = _n_parts(n_parts)

    def codegen(context, builder, sig, args):
        return _widen16(builder, _gather(builder, context, sig, args, F32, n, rep=True))
    return F32x16(a, i, n_parts), codegen


@intrinsic
def rep4_i32(typingctx, a, i, n_parts):
    """int32 x 16 in reduce4's layout with a[i + p] (int32) for all four rows."""
    _gather_type((a,), (types.int32,), "rep4_i32")
    n = _n_parts(n_parts)

    def codegen(context, builder, sig, args):
        return _widen16(builder, _gather(builder, context, sig, args, I32, n, rep=True))
    return I32x16(a, i, n_parts), codegen


@intrinsic
def gather4_u8(typingctx, a0, i0, a1, i1, a2, i2, a3, i3, n_parts):
    """int32 x 16 in reduce4's layout from uint8 rows (zero points), widened."""
    _gather_type((a0, a1, a2, a3), (types.uint8,), "gather4_u8")
    n = _n_parts(n_parts)

    def codegen(context, builder, sig, args):
        v = _gather(builder, context, sig, args, I8, n, rep=False)
        return _widen16(builder, builder.zext(v, ir.VectorType(I32, 4 * n)))
    return I32x16(a0, i0, a1, i1, a2, i2, a3, i3, n_parts), codegen


@intrinsic
def f32x16_lane(typingctx, v, i):
    """Lane i of a float32 x 16."""
    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], context.cast(builder, args[1], sig.args[1], types.int32))
    return types.float32(v, i), codegen
