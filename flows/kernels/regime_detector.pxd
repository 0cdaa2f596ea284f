# Cython declarations for flows/kernels/regime_detector.py (see setup.py): the same
# source, compiled with C doubles for the detector's state and the locals of
# score_one. Without a compiler the .py runs as it is; keep both in step (a
# unit test compares their scores value for value).
import cython

# Module constants become C constants: the compiled module does not export them.
cdef double _LN10, _NEW_COUNT, SPIKE_AT, SHIFT_AT, DRIFT_AT, STUCK_AT, FLAT_AT, FAST, TREND
cdef double SLOPE, SLOW, ANCHOR, SCALE, WANDER, REPEAT, ACTIVITY, CANDIDATE, Q_UP, Q99_DOWN
cdef double Q50_UP, Q50_DOWN, SEPARATE, TRUSTED, _LEARN

cdef class Regime:
    cdef public double level, spread, noise, dev1, anchor, dev2, prep, count, seen
    cdef public double z99, z50, s99, s50, slope

cpdef double _width(Regime mode)

cdef class RegimeDetector:
    cdef public long _accept, _max_regimes, _warmup, _n, _run
    cdef public Py_ssize_t _cur
    cdef public double _sens, _fast, _trend, _prev, _out, _act, _streak, _pending
    cdef public object _cand
    cdef public list _modes

    @cython.locals(x=double, n=long, level=double, spread=double, noise=double, dev1=double,
                   anchor=double, dev2=double, prep=double, count=double, z99=double, z50=double,
                   s99=double, s50=double, slope=double, floor=double, old_fast=double,
                   trend=double, fast=double, r=double, ar=double, z=double, pending=double,
                   units=double, switched=bint, transition=bint, lim=double, out=double,
                   sign=double, d1=double, d2=double, step=double, act=double, alarm=double,
                   u=double, s=double, reported=double, score=double, run=long, inv=double,
                   dev=double, old_level=double, a=double, k=double, m=Regime)
    cpdef double score_one(self, object ts, double value)
    cpdef double score_learn_one(self, object ts, double value)

    @cython.locals(cur=Regime, mode=Regime, d=double, best_d=double, r=double)
    cpdef tuple _switch(self, double x, long n, bint may_transit)
