"""What the tests share: the project copier (`project`), the relation comparator (`compare`),
the projects built once per session (`built`), and the generated inputs of the property tests
(`streams`, `metric_tables`). Test modules import from here, never from each other."""
