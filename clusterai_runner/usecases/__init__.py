"""The use cases: what the CLI, the web app and the autoscaler do to a cluster.

Each is a plain function of settings, a store and its inputs, with callbacks for
progress and a ``CancelToken`` for long work; none prints, reads a terminal or touches
signals, so any thread or process can call it. They reach outside systems only through
``clusterai_runner.adapters``.
"""
