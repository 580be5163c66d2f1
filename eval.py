"""Evaluate zoo models on held-out data: ``python eval.py --model NAME --checkpoint PATH --data digits``.

Top-1/top-5/loss for image classifiers (with the model's own preprocessing), perplexity for language models;
JSON (and CSV for many models) with params and MACs. The code lives in zoo/evaluate.py; ``--help`` lists options.
"""

import sys

from zoo.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
