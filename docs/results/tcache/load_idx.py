"""Time and peak memory of reading the four Fashion-MNIST IDX files (`load_idx_dataset`), in a
fresh process; the source tree is the one on PYTHONPATH (or the installed package).

    PYTHONPATH=TREE/src python docs/results/tcache/load_idx.py
"""
import resource
import time

from dietsnn.data import DATASETS
from dietsnn.data.idx import load_idx_dataset

t = time.perf_counter()
arrays = load_idx_dataset(DATASETS["fashion-mnist"])
seconds = time.perf_counter() - t
print(f"{seconds:.3f} s, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB,",
      [tuple(a.shape) for a in arrays], int(arrays[0].sum()), int(arrays[2].sum()))
