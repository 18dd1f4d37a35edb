"""Operations as code, used at build time only: the runtime never imports this package."""
