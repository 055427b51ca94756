"""Shared primitives every layer may use, importing nothing else of the package: argument
checks (`checks`), registries by name (`registry`), atomic files (`files`), seeded and
recorded random draws (`noise`), mixed precision (`precision`), interrupt handling of the
commands (`interrupts`)."""
