# Cython declarations for flows/kernels/series.py (see setup.py and regime_detector.pxd):
# the per-series state, the processor and the output lists as extension types,
# so the per-reading path reads their fields directly.
import cython

from flows.kernels.rollups cimport RollupState

cdef class SeriesState:
    cdef public str kind
    cdef public bint text
    cdef public double last_epoch, pending_from, pending_until, threshold_seen
    cdef public object recent
    cdef public int recent_pos
    cdef public object events, detector, anomaly_alarm, device_alarm, device, pending
    cdef public bint run_signal
    cdef public list threshold_alarms
    cdef public RollupState rollups

    @cython.locals(i=int, pos=int)
    cpdef int repeats(self, double epoch, double value)

cdef class OutputChunks:
    cdef public list telemetry, event, alarm, log, rollup, anomaly_score, dead_letter

cdef class SeriesProcessor:
    cdef public object config, new_state, to_log, detector_name, _epoch, reconcile, registry
    cdef public bint anomaly_on, emit_scores
    cdef public double threshold, duplicate_window

    @cython.locals(entry=list, state=SeriesState, with_rollups=bint)
    cpdef bint process_batch(self, chunks, dict series, dict last_seen, double now,
                             OutputChunks out, dict devices=*)

    @cython.locals(kind=str, produced=list, epoch=double, score=double, repeat=int,
                   context=bint, why=int)
    cpdef process(self, SeriesState state, reading, OutputChunks out)
