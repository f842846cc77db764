"""Training exits on the frozen backbone: the attach step's work, the training loop, LECO's search."""
