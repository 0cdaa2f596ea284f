# Cython declarations for flows/kernels/rollups.py (see setup.py and regime_detector.pxd):
# accumulators and the rollup state as extension types with C fields.
import cython

cdef double _INF

cdef class Acc:
    cdef public long count, revision
    cdef public double mean, m2, lo, hi, total, first, first_ts, last, last_ts
    cdef public bint dirty

@cython.locals(na=long, nb=long, n=long, delta=double)
cpdef _merge_into(Acc dst, Acc src)

@cython.locals(n=long, delta=double, mean=double)
cpdef _add_value(Acc acc, double ts, double x)

cdef class RollupState:
    cdef public object _spec, _cur_idx
    cdef public double _max_ts, _next_check, _cur_end, _len0, _delay, _lateness
    cdef public list _wins
    cdef public Acc _cur_acc

    @cython.locals(acc=Acc, end=double, wm=double, wins=dict, x=double, was_dirty=bint,
                   t=Py_ssize_t, cacc=Acc, cend=double)
    cpdef add(self, double ts, value, list out, ident)
