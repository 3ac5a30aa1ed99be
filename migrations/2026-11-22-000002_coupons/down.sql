DROP TABLE user_coupons;
DROP TABLE coupons;
