#!/usr/bin/env sh
# Print the path of a CPython >= 3.12 for the real Bindu venv, or fail with one line saying what is missing.
# pyenv shims on PATH exist even when that version is not selected (they then fail), so every candidate
# is run, not just looked up.
is_recent() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

for name in python3.12 python3.13 python3; do
    candidate=$(command -v "$name" 2>/dev/null) || continue
    if is_recent "$candidate"; then echo "$candidate"; exit 0; fi
done
if root=$(pyenv root 2>/dev/null); then
    for candidate in "$root"/versions/3.12*/bin/python "$root"/versions/3.1[3-9]*/bin/python; do
        [ -x "$candidate" ] && is_recent "$candidate" && { echo "$candidate"; exit 0; }
    done
fi
echo "find_python.sh: the real bindu needs CPython >= 3.12; put python3.12 on PATH or install it with pyenv" >&2
exit 1
