"""qgm-ray: decentralized deep learning on heterogeneous data, on Ray."""
__version__ = "0.1.0"
