# Cython declarations for flows/kernels/surprise_detector.py (see setup.py): the same
# source, compiled with C doubles for the detector's state and the locals of _step.
# Without a compiler the .py runs as it is; keep both in step (a unit test compares
# their scores value for value, another the fields with __slots__).
import cython

# Module constants become C constants: the compiled module does not export them.
cdef double _LN10, _LN2, SPIKE_AT, SHIFT_AT, DRIFT_AT, MID_AT, VOL_AT, UNITS_CAP, STUCK_AT
cdef double CAP, FAST, MID, VOL, SLOW, ANCHOR, SCALE, WANDER, REPEAT, Q_UP, Q99_DOWN
cdef double Q50_UP, Q50_DOWN, LEARN, REF_KEEP, REF_MARGIN, COARSE, RESOLUTION, RANGE_FORGET
cdef double NEW_R, NEW_AT, HELD
cdef long HALVE_EVERY, _TABLE

cdef class SurpriseKernel:
    cdef public double _anchor, _dev1, _dev2, _fast, _level, _maxrun, _mid, _devm, _vol
    cdef public double _devv, _noise, _origin, _out, _prep, _prev, _ref, _s50, _s99, _hi
    cdef public double _lo, _move, _steps, _width, _z50, _z99, sensitivity
    cdef public long _bucket, _fixed, _hot, _n, _novel, _run, warmup
    cdef public bytearray _recent, _table

    cpdef double score_learn_one(self, object ts, double value)

    @cython.locals(x=double, n=long, level=double, noise=double, floor_=double, fast=double,
                   prev=double, r=double, ar=double, z=double, lim=double, out=double,
                   sign=double, d1=double, mid=double, dm=double, d2=double, z99=double,
                   z50=double, s99=double, s50=double, spike=double, s=double, shift=double,
                   drift=double, width=double, table=bytearray, bucket=long, jcell=long,
                   lcell=long, recent=bytearray, gj=double, u=double, c=long, g=double, row=long, step=double,
                   q=long, units=double, vol=double, run=long, stuck_at=double, ref=double,
                   reported=double, score=double, inv=double, a=double, dev=double, k=double,
                   target=double, i=long, novel=long, m=long)
    cpdef double _step(self, double value, bint learn)
