"""Where raw records come from: files and stdin (`files`), Kafka (`kafka`).

A source yields `meshwatch.records.RawRecord`s (bytes + origin + declared format) and knows
nothing about formats beyond how records are framed.
"""
