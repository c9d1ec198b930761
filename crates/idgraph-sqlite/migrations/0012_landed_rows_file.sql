-- Landed rows move to a file of their own (decision 0022). SQL cannot write another file from
-- here, so the table is set aside; the store copies its rows into the landed-rows file when it
-- opens and then drops it.
ALTER TABLE import_rows RENAME TO import_rows_moving;
