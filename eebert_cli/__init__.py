"""eebert: early exiting for deployed transformer classifiers, backbone frozen."""

__version__ = "0.1.0"
