"""The results dashboard: Dash pages served by the HQ under ``/ui`` (see ``mlqueue.dashboard.app``)."""

from mlqueue.dashboard.app import create_dash_app

__all__ = ["create_dash_app"]
