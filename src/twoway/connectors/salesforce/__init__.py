"""Salesforce: our customers as Accounts (object and field names are settings), through simple-salesforce."""
