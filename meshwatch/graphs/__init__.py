"""The service graph read back from the store: snapshots, diffs, series, coverage, exports.

SQL lives in `meshwatch.store.graph_queries`; this package holds the pure logic over its rows
(`snapshot`, `diff`, `coverage`, `export`) and `service`, the glue the CLI and the API share.
"""
