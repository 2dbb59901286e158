-- The audit log lives in its own database: the audit service owns it alone.
CREATE DATABASE coffer_audit OWNER coffer;
