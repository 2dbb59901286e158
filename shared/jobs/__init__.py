"""Running backup and restore jobs off the eventlet hub, in a child process.

The service side (:mod:`shared.jobs.runner`) claims nothing itself: the service claims
a job from the catalog, then hands it here. The child side (:mod:`shared.jobs.child`)
runs the data path with real threads and blocking I/O, and talks back over stdout.
Child processes are forked by a pre-imported zygote (:mod:`shared.jobs.zygote`,
driven from the service by :mod:`shared.jobs.forked`) so that they start in
milliseconds.
"""
