"""The fast path of normalisation (word by word, cached) gives exactly what one scan of the text gives."""

import random

from procmem.learning import normalize as norm_mod
from procmem.learning.normalize import NormalizedAction, collapse_whitespace, normalize_action

_PIECES = ["http://", "www.", "a", "Z", "x1", "255.", "0", "/", ".", "-", ":", "@", "=", "~", "*", "(",
           ")", "]", ",", " ", "  ", "\t", "é", "١", "_", "txt", "deadbeef1", ".tar.gz", "10.0.0.1",
           ":8080", "/24", "x.py(", "-7", "3.5", "v1.2", "'", '"', "'a b'", '"c d"']


def test_word_by_word_normalisation_equals_one_scan_of_the_text():
    rng = random.Random(0)
    texts = ["scp notes.txt root@10.0.0.2:/tmp", "ls -la ./x/ 10.0.0.1/24", "tar xf a.tar.gz -C /opt 3",
             "v1.2 (3) 4,5 x-1 2", "curl http://a.b/c d", "echo 'a b' 1.2.3.4", "", "   "]
    texts += ["".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 14))) for _ in range(20_000)]
    for text in texts:
        assert normalize_action(text) == NormalizedAction(*norm_mod._scan(collapse_whitespace(text))), text
