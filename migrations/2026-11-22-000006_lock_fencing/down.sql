DROP TABLE lock_fencing;
