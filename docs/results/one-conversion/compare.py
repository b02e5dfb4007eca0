"""Compare two metrics.json of `dietsnn run` value by value (times and memory left out).

    python compare.py metrics-before.json metrics-afd453d.json
"""
import json
import sys


def flat(d, p=""):
    if isinstance(d, dict):
        return {k2: v for k, x in d.items() for k2, v in flat(x, f"{p}/{k}").items()}
    if isinstance(d, list):
        return {k2: v for i, x in enumerate(d) for k2, v in flat(x, f"{p}/{i}").items()}
    return {p: d}


a, b = (flat(json.load(open(f))) for f in sys.argv[1:3])
keys = [k for k in sorted(set(a) | set(b)) if "second" not in k and "rss" not in k]
diff = [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]
print(f"{len(keys)} values compared, {len(diff)} differ")
for d in diff:
    print(*d)
