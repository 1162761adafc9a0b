"""`/metrics`: Prometheus metrics. The instruments recorded in-process live in `common.metrics`;
this app adds what is read from the database at scrape time, and the endpoint. It reads every
app below it and nothing imports it but the URL conf."""
