"""Tiny data files written into a test's tmp_path."""

import json


def write_file(tmp_path, name, text, encoding="utf-8"):
    """Write `text` (str, encoded with `encoding`, or bytes as they are) to tmp_path/name; its path as str."""
    p = tmp_path / name
    p.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(p)


def write_jsonl(tmp_path, name, rows):
    """One JSON object per line (UTF-8, not escaped) in tmp_path/name; its path as str."""
    return write_file(tmp_path, name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
