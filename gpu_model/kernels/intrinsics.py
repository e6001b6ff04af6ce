"""Low-level helpers of the compiled kernels: software prefetch, unmanaged array views, float64 bits.

* :func:`prefetch1` / :func:`prefetch2` (LLVM ``llvm.prefetch``). A pulse list visits synapses scattered over the tile's device records; the SET step is bound by
those scattered reads. Asking for the records of the item ``LOOKAHEAD`` places ahead while the
current one computes lets the memory system overlap the misses. A prefetch is a hint: it never
faults and changes no result.
* :func:`unmanaged`: the same array without its reference-counted memory handle (meminfo NULL).
  Numba counts references to every array a compiled function passes on or unpacks from a tuple,
  with an atomic add each time; in the per-synapse code those atomics cost more than the physics
  (measured: ~250 ns of ~300 ns per pulsed synapse). The kernels' entry points take unmanaged
  views of arrays that their Python caller keeps alive for the call, so the counts are skipped
  (an increment of a NULL handle is a no-op). Never return such a view to Python.
* :func:`f64_bits` / :func:`bits_f64`: a float64's IEEE-754 bit pattern as an int64 and back (LLVM
  ``bitcast``, no conversion), for the exponent/mantissa split of keyed_rng.log_fast.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LOCALITY = 3        # llvm.prefetch locality: 3 = keep in all cache levels
READ_WRITE = 1      # 1: the line will be written (a pulsed device's record is updated)
DATA_CACHE = 1      # 1: data (not instruction) cache


def _emit(context, builder, ptr):
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, READ_WRITE), ir.Constant(i32, LOCALITY),
                      ir.Constant(i32, DATA_CACHE)])


@intrinsic
def prefetch1(typingctx, arr, i):
    """Prefetch the cache line of ``arr[i]`` (1-D array, any layout; no bounds check)."""
    sig = types.void(arr, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        _emit(context, builder, cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]],
                                                         wraparound=False))
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def prefetch2(typingctx, arr, i, j):
    """Prefetch the cache line of ``arr[i, j]`` (2-D array, any layout; no bounds check)."""
    sig = types.void(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        _emit(context, builder, cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]],
                                                         wraparound=False))
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def unmanaged(typingctx, arr):
    """``arr`` as a view without a memory handle (see the module docstring; the caller keeps the
    array alive while the view is used)."""
    if not isinstance(arr, types.Array):
        return None
    sig = arr(arr)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        src = context.make_array(aryty)(context, builder, args[0])
        dst = context.make_array(aryty)(context, builder)
        for name in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(dst, name, getattr(src, name))
        dst.meminfo = cgutils.get_null_value(dst.meminfo.type)
        dst.parent = cgutils.get_null_value(dst.parent.type)
        return dst._getvalue()
    return sig, codegen


@intrinsic
def f64_bits(typingctx, x):
    """The bits of float64 ``x`` as an int64 (sign, 11-bit exponent, 52-bit mantissa)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return sig, codegen


@intrinsic
def bits_f64(typingctx, b):
    """The float64 whose bits are int64 ``b`` (inverse of :func:`f64_bits`)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return sig, codegen
