import sys
import time
from datetime import date
from pathlib import Path

from app.flux.generator import generate_single

out = Path(sys.argv[1])
foyers = int(sys.argv[2])
out.parent.mkdir(parents=True, exist_ok=True)
t = time.time()
g = generate_single(out, foyers, date(2024, 3, 1), seed=7)
print(g.path, g.foyers, g.persons, f"{g.path.stat().st_size / 1e6:.0f} MB", f"{time.time() - t:.1f}s")
