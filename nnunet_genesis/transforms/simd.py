"""Eight-lane gathers for the compiled kernels, written as LLVM vector code (numba intrinsics).

Why: the intensity mapping reads two lookup tables at data-dependent bins, and the shuffle copy
reads the source at permuted voxels. LLVM's loop vectoriser leaves both loops scalar (it does
not consider a gather worth it), although this CPU's hardware gather maps a 128^3 volume in
about half the time (measured: 1.0 vs 2.3 ms). These intrinsics emit LLVM's portable
``llvm.masked.gather`` / ``masked.load`` / ``masked.store`` on eight lanes, the first ``n``
of them active: x86 with AVX2 or AVX-512 gets hardware gathers (``vgatherdps``/``vgatherqps``),
other targets a correct per-lane sequence from LLVM. Inactive lanes are never read or written,
so a row or interval shorter than eight needs no scalar tail. Arrays must be one-dimensional
and C-contiguous; the caller guarantees the indices are in bounds (no bounds checks, as in the
rest of the kernels).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 8

_F32, _I1, _I32, _I64 = ir.FloatType(), ir.IntType(1), ir.IntType(32), ir.IntType(64)
_VF32, _VI32, _VI64, _VMASK = (ir.VectorType(t, LANES) for t in (_F32, _I32, _I64, _I1))
_VPTR = ir.VectorType(_F32.as_pointer(), LANES)


def _splat(builder: ir.IRBuilder, value: ir.Value, vector_type: ir.VectorType) -> ir.Value:
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), ir.Constant(_VI32, [0] * LANES))


def _lane_mask(context, builder: ir.IRBuilder, n_type, n: ir.Value) -> ir.Value:
    """Lanes 0..n-1 active (``n`` any integer type)."""
    n = context.cast(builder, n, n_type, types.int64)
    return builder.icmp_signed("<", ir.Constant(_VI64, list(range(LANES))), _splat(builder, n, _VI64))


def _data(context, builder, array_type, value) -> ir.Value:
    return context.make_array(array_type)(context, builder, value).data


def _masked_load(builder: ir.IRBuilder, base: ir.Value, at: ir.Value, mask: ir.Value) -> ir.Value:
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VF32, [_VF32.as_pointer(), _I32, _VMASK, _VF32]),
                                        "llvm.masked.load.v8f32.p0v8f32")
    ptr = builder.bitcast(builder.gep(base, [at]), _VF32.as_pointer())
    return builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_VF32, ir.Undefined)])


def _masked_store(builder: ir.IRBuilder, value: ir.Value, base: ir.Value, at: ir.Value, mask: ir.Value) -> None:
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [_VF32, _VF32.as_pointer(), _I32, _VMASK]),
                                        "llvm.masked.store.v8f32.p0v8f32")
    builder.call(fn, [value, builder.bitcast(builder.gep(base, [at]), _VF32.as_pointer()), ir.Constant(_I32, 4), mask])


def _masked_gather(builder: ir.IRBuilder, base: ir.Value, index: ir.Value, mask: ir.Value) -> ir.Value:
    """base[index[lane]] for the active lanes; ``index`` a vector of i32 or i64."""
    index = builder.sext(index, _VI64) if index.type.element.width < 64 else index
    offset = builder.mul(index, ir.Constant(_VI64, [4] * LANES))
    ptrs = builder.inttoptr(builder.add(_splat(builder, builder.ptrtoint(base, _I64), _VI64), offset), _VPTR)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VF32, [_VPTR, _I32, _VMASK, _VF32]),
                                        "llvm.masked.gather.v8f32.v8p0f32")
    return builder.call(fn, [ptrs, ir.Constant(_I32, 4), mask, ir.Constant(_VF32, ir.Undefined)])


def _is_float32_vector(t) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C" and t.dtype == types.float32


@intrinsic
def gather_copy(typingctx, src, dst, index, i, at, n):
    """dst[at + k] = src[index[i + k]] for k < min(n, 8); ``index`` int32 or int64.

    ``index[i:i + 8]`` is loaded whole: the index array needs 8 spare entries at its end.
    """
    if not (_is_float32_vector(src) and _is_float32_vector(dst) and isinstance(index, types.Array)
            and index.ndim == 1 and index.layout == "C" and index.dtype in (types.int32, types.int64)
            and all(isinstance(t, types.Integer) for t in (i, at, n))):
        return None

    def codegen(context, builder, signature, args):
        s, d, idx = (_data(context, builder, signature.args[k], args[k]) for k in range(3))
        mask = _lane_mask(context, builder, signature.args[5], args[5])
        vtype = ir.VectorType(idx.type.pointee, LANES)
        lanes = builder.load(builder.bitcast(builder.gep(idx, [args[3]]), vtype.as_pointer()), align=4)
        _masked_store(builder, _masked_gather(builder, s, lanes, mask), d, args[4], mask)
        return context.get_dummy_value()

    return types.void(src, dst, index, i, at, n), codegen


@intrinsic
def gather_piecewise_linear(typingctx, src, dst, at, n, lo, hi, scale, a, b, last):
    """dst[v] = clip(a[k] + b[k] * (src[v] - lo), lo, hi), k = clip(int((src[v] - lo) * scale), 0, last).

    For v in at .. at + min(n, 8) - 1; ``lo``, ``hi``, ``scale`` float32; ``a``, ``b`` float32
    tables (``kernels.map_intervals``). ``dst`` may be ``src``.
    """
    if not (all(_is_float32_vector(t) for t in (src, dst, a, b))
            and all(isinstance(t, types.Float) for t in (lo, hi, scale))
            and all(isinstance(t, types.Integer) for t in (at, n, last))):
        return None

    def codegen(context, builder, signature, args):
        s, d = _data(context, builder, signature.args[0], args[0]), _data(context, builder, signature.args[1], args[1])
        ta, tb = _data(context, builder, signature.args[7], args[7]), _data(context, builder, signature.args[8], args[8])
        mask = _lane_mask(context, builder, signature.args[3], args[3])
        low, high, step = (_splat(builder, context.cast(builder, args[k], signature.args[k], types.float32), _VF32)
                           for k in (4, 5, 6))
        u = builder.fsub(_masked_load(builder, s, args[2], mask), low)
        k = builder.fptosi(builder.fmul(u, step), _VI32)
        zero = ir.Constant(_VI32, [0] * LANES)
        top = _splat(builder, context.cast(builder, args[9], signature.args[9], types.int32), _VI32)
        k = builder.select(builder.icmp_signed("<", k, zero), zero, k)
        k = builder.select(builder.icmp_signed(">", k, top), top, k)
        y = builder.fadd(_masked_gather(builder, ta, k, mask), builder.fmul(_masked_gather(builder, tb, k, mask), u))
        y = builder.select(builder.fcmp_ordered("<", y, low), low, y)
        y = builder.select(builder.fcmp_ordered(">", y, high), high, y)
        _masked_store(builder, y, d, args[2], mask)
        return context.get_dummy_value()

    return types.void(src, dst, at, n, lo, hi, scale, a, b, last), codegen

