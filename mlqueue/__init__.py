"""mlqueue: turn the idle computers in a house into a farm for machine-learning jobs.

``celery -A mlqueue worker`` loads the Celery app defined in ``mlqueue.celery_app``.
"""

from mlqueue.celery_app import app

__all__ = ["app"]
__version__ = "0.1.0"
