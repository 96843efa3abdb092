"""banger-resolved: Routes *.vm to banger's DNS server through systemd-resolved."""
