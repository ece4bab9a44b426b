"""The embedded demo: a simulated broker with four traders, a scripted platform, and the producers."""
