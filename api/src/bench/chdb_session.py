"""One chDB session for `skyglass bench`: reads requests as JSON lines on stdin and answers each
on stdout. A request is a list of ClickHouse statements; the answer is the seconds they took
together, from the first call until the last result is read, and each one's rows, or the error."""
import json
import sys
import time

try:
    from chdb import session
except ImportError as error:
    print(json.dumps({"error": f"no chdb in this Python ({error}); pip install chdb"}), flush=True)
    sys.exit(0)

SETTINGS = " SETTINGS output_format_json_quote_64bit_integers = 0, output_format_json_quote_denormals = 0"

chdb_session = session.Session()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    statements = json.loads(line)
    try:
        started = time.perf_counter()
        results = [chdb_session.query(statement + SETTINGS, "JSON").bytes() for statement in statements]
        seconds = time.perf_counter() - started
        rows = [json.loads(result)["data"] if result else [] for result in results]
        answer = {"seconds": seconds, "rows": rows}
    except Exception as error:  # a statement chDB rejects: reported, the session goes on
        answer = {"error": str(error).strip().splitlines()[0][:500]}
    print(json.dumps(answer), flush=True)
