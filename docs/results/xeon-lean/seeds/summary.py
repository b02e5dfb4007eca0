import json, statistics as st, os
os.chdir('.')
def snn(d):
    m = json.load(open(d + '/metrics.json'))
    return m
rows = {}
for name, dirs in {"old ca77b72": ["old-s0", "old-s1", "old-s2"],
                   "new 0a23460": ["base", "run-s1", "run-s2"],
                   "new 0a23460 penalty 0": ["p0-s0", "p0-s1", "p0-s2"]}.items():
    accs = []
    for s, d in enumerate(dirs):
        if not os.path.exists(d + '/metrics.json'):
            print(name, s, 'missing'); continue
        m = snn(d)
        a = m['snn']['test_accuracy']; accs.append(a)
        print(name, s, m.get('ann', {}).get('test_accuracy'), m.get('converted', {}).get('test_accuracy'),
              m.get('converted', {}).get('calibration', {}).get('scale'), a,
              round(m['energy']['ratio'], 2) if 'energy' in m else '')
    if len(accs) > 1:
        print(name, 'mean', round(100 * st.mean(accs), 2), 'std', round(100 * st.stdev(accs), 2))
