"""Shared test settings: few threads (CI has 2 cores shared by pytest workers)."""

import os

import torch

torch.set_num_threads(int(os.environ.get("SINKLENS_TEST_THREADS", "1")))
