-- Several nodes (issue 14): a chat message is claimed (queued -> running) in the database by
-- the node holding its conversation's lease. Who claimed it and under which lease generation,
-- for the operator reading a conversation's history after a takeover.
ALTER TABLE chat_messages ADD COLUMN claimed_by TEXT;
ALTER TABLE chat_messages ADD COLUMN claim_generation BIGINT;
