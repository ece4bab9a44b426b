"""MetaTrader 5 access: the package's constants and result types, a gateway over the three ways to reach
a terminal (native Windows package, mt5linux RPyC bridge, in-process simulator), and the simulator."""
