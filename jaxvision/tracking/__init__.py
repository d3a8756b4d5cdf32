"""Tracking by detection: a jitted per-frame tracker (Kalman + association)."""

from jaxvision.tracking.tracker import (
    ASSOCIATIONS,
    TrackerConfig,
    TrackState,
    init_state,
    track_sequence,
    update,
)

__all__ = [
    "ASSOCIATIONS",
    "TrackState",
    "TrackerConfig",
    "init_state",
    "track_sequence",
    "update",
]
