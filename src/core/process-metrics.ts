/**
 * How often the event loop delay is sampled for the default process metrics
 * (nodejs_eventloop_lag_*). prom-client's default, 10 ms, is a timer that wakes an idle process a
 * hundred times a second: most of an idle API process's CPU (issue 15's idle cost). A sample every
 * 100 ms still catches every stall longer than that, and the lag it reports is measured to the
 * nanosecond either way.
 */
export const EVENT_LOOP_SAMPLE_MS = 100;
