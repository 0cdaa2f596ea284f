# Cython declarations for flows/rollups.py (see setup.py and regime_detector.pxd):
# the rollup state as an extension type with C fields, typed accumulator updates.
import cython

cdef double _INF

@cython.locals(n=long, delta=double, mean=double)
cpdef _add_value(list acc, double ts, double x)

cdef class RollupState:
    cdef public object _spec, _cur_idx
    cdef public double _max_ts, _next_check, _cur_end, _len0, _delay, _lateness
    cdef public list _wins, _cur_acc

    @cython.locals(acc=list, end=double, wm=double, wins=dict, x=double, was_dirty=bint,
                   t=Py_ssize_t, cacc=list, cend=double)
    cpdef add(self, double ts, value, list out, ident)
