"""Studies: short, readable scripts of plain function calls over a grid."""
