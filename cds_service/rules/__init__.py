"""The medical-necessity rules: a Context over typed facts, and one module per criterion."""
