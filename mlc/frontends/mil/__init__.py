"""ML Program (``mlProgram``) front end: MIL IR, op registry, lowering, verification, write-back."""
