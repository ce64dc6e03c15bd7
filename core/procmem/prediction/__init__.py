"""Next-action prediction: the procmem predictor and its peers."""

from procmem.prediction.baselines import PEERS, IPAMPredictor, MarkovPredictor, PPMPredictor
from procmem.prediction.predictor import NextActionPredictor

__all__ = [
    "PEERS",
    "IPAMPredictor",
    "MarkovPredictor",
    "NextActionPredictor",
    "PPMPredictor",
]
