"""Device drivers: a pure codec per protocol and a transport that feeds it."""
