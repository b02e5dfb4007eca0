import sys, dataclasses
sys.path.insert(0, "examples")  # run from the repository root: python docs/results/penalty-custom/example_with_penalty.py 0.0
import convert_custom as ex
pen = float(sys.argv[1])
ex.SNN_TRAIN = dataclasses.replace(ex.SNN_TRAIN, spike_penalty=pen)
sys.argv = ["x", "--models", "vgg"]
ex.main()
