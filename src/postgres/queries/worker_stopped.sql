-- worker_stopped: a worker shut down gracefully.
-- $1 text: worker id
UPDATE workers SET stopped_at = now() WHERE id = $1
