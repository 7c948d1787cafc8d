"""The autoscaler: ``policy`` (what to do, a pure function), ``config`` (the inventory's
``autoscale_*`` variables, checked). The loop that reads the signals and acts through the
use cases is ``clusterai_runner.usecases.autoscale``."""
