"""Performance harness: round time and memory of the local engine, the Ray engine and a
torch.distributed (gloo) peer. Entry point: `python main.py bench [--quick] [--output FILE]`."""
